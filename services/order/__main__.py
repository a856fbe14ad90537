"""`python -m services.order`: the partner ordering API (OrderService) and the ops approval API (ApprovalService)."""

import sys

from services.order.app import main

sys.exit(main())
