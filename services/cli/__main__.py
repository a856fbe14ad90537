"""``python -m services.cli`` is ``idcctl``."""

import sys

from services.cli.main import main

sys.exit(main())
