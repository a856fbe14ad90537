"""The devstack's peers for integration tests: databases, the Kafka broker, NETCONF routers.

Only tests under tests/integration see these fixtures; the unit tests import neither them nor
the devstack (tests/unit/test_isolation.py checks). A conftest below the root may not use
``pytest_plugins``, so the fixtures are imported here by name.
"""

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
