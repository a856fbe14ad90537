"""Shared fixtures: databases, the Kafka broker and NETCONF routers from the devstack."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.kafka",
    "tests.fixtures.netconf",
]
