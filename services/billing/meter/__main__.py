"""`python -m services.billing.meter`: the usage meter."""

import sys

from services.billing.meter.app import main

sys.exit(main())
