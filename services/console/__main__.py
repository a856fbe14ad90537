"""`python -m services.console`: the operations console (a web page for telco ops).

Listens on IDC_CONSOLE_LISTEN (127.0.0.1:8080) and talks to the order service at
IDC_ORDER_ADDRESS (127.0.0.1:50051) and the provisioning service at IDC_PROVISIONING_ADDRESS
(127.0.0.1:50052). With IDC_CONSOLE_TLS_CERT and IDC_CONSOLE_TLS_KEY it serves https.
IDC_METRICS_LISTEN serves its process metrics (services/common/telemetry.py).
"""

import os
import sys

import uvicorn

from services.common import certificate_expiry
from services.common.config import ConfigError
from services.common.logs import configure_logging
from services.common.telemetry import configure_telemetry
from services.console.app import make_app
from services.console.settings import ConsoleSettings


def main() -> int:
    try:
        settings = ConsoleSettings.from_env()
        configure_telemetry("console")
        certificate_expiry.register(certificate_expiry.configured_certificates(settings.grpc_tls))
    except ConfigError as error:
        print(f"console: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("console", os.environ.get("IDC_LOG_LEVEL", "INFO"),
                      os.environ.get("IDC_LOG_FORMAT", "json"))
    uvicorn.run(make_app(settings), host=settings.host, port=settings.port,
                ssl_certfile=settings.tls_cert or None, ssl_keyfile=settings.tls_key or None,
                log_config=None, access_log=False, timeout_graceful_shutdown=5)
    return 0


sys.exit(main())
