"""`python -m services.billing`: the billing API (BillingService)."""

import sys

from services.billing.app import main

sys.exit(main())
