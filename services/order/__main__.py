"""`python -m services.order`: the partner ordering API and the ops approval API.

API tokens are issued with `idcctl admin tokens issue` (services/cli/tokens.py).
"""

import sys

from services.order.app import main

sys.exit(main())
