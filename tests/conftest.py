"""Every test runs with plaintext gRPC unless it asks for TLS itself.

``IDC_TLS=off`` is the explicit switch a service needs to serve plaintext (without it, a
service with no certificate refuses to start): processes and in-process servers the
tests start inherit it; tests/integration/test_tls.py passes its own TLS settings.
"""

import os

os.environ["IDC_TLS"] = "off"
