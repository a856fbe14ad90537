"""`python -m services.order`: the partner ordering API and the ops approval API.

`python -m services.order tokens issue --role customer --tenant acme --subject alice@acme`
prints a new API token (stored hashed in the order database).
"""

import sys

from services.order.app import main
from services.order.cli import tokens_main

sys.exit(tokens_main(sys.argv[2:]) if sys.argv[1:2] == ["tokens"] else main())
