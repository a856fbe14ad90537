"""`python -m services.order`: the partner ordering API and the ops approval API."""

import sys

from services.order.app import main

sys.exit(main())
