"""The devstack's peers for integration tests: databases, the Kafka broker, NETCONF routers.

Only tests under tests/integration see these fixtures; the unit tests import neither them nor
the devstack (tests/unit/test_isolation.py checks). A conftest below the root may not use
``pytest_plugins``, so the fixtures are imported here by name.
"""

import os

# The explicit development mode: services started by the tests (in process or as
# processes, which inherit it) use generated development keys (the audit keys, under
# their IDC_VAR_DIR).
os.environ.setdefault("IDC_DEV_MODE", "true")

from tests.fixtures.database import database_url, postgres_database_url, sqlite_database_url
from tests.fixtures.kafka import event_db, kafka_bootstrap, kafka_settings, topic
from tests.fixtures.netconf import own_routers, routers

__all__ = [
    "database_url",
    "event_db",
    "kafka_bootstrap",
    "kafka_settings",
    "own_routers",
    "postgres_database_url",
    "routers",
    "sqlite_database_url",
    "topic",
]
