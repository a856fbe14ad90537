"""`python -m services.provisioning`: the provisioning API (ProvisioningService)."""

import sys

from services.provisioning.app import main

sys.exit(main())
