"""The project's Kafka topics, and creating them.

Every topic is keyed by circuit id; each has a dead-letter companion ``<topic>.dlq``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from services.common.config import KafkaSecurity, KafkaSettings
from services.common.events.connection import connection_config

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"

ORDER_EVENTS = "idc.order.events"
PROVISIONING_COMMANDS_SG = "idc.provisioning.commands.sg"
PROVISIONING_COMMANDS_CQ = "idc.provisioning.commands.cq"
PROVISIONING_REPLIES = "idc.provisioning.replies"
CIRCUIT_EVENTS = "idc.circuit.events"
USAGE_SAMPLES = "idc.usage.samples"
# Token revocations (services/common/revocations.py): keyed by token id, read by every
# process with no group, so no dead-letter topic; retention at least the maximum token
# lifetime (revocation_topic_configs).
TOKEN_REVOCATIONS = "idc.token.revocations"

EVENT_TOPICS: tuple[str, ...] = (
    ORDER_EVENTS,
    PROVISIONING_COMMANDS_SG,
    PROVISIONING_COMMANDS_CQ,
    PROVISIONING_REPLIES,
    CIRCUIT_EVENTS,
    USAGE_SAMPLES,
)


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def with_dead_letters(topics: Iterable[str]) -> list[str]:
    """Each topic followed by its dead-letter topic."""
    names: list[str] = []
    for topic in topics:
        names += [topic, dead_letter_topic(topic)]
    return names


ALL_TOPICS: tuple[str, ...] = (*with_dead_letters(EVENT_TOPICS), TOKEN_REVOCATIONS)


def revocation_topic_configs(max_ttl_s: int) -> dict[str, dict[str, str]]:
    """Topic configs of the revocation topic: kept a day longer than any token lives."""
    return {TOKEN_REVOCATIONS: {"retention.ms": str((max_ttl_s + 86_400) * 1000)}}


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication: int,
    *,
    timeout_s: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Idempotent: a topic that already exists (with whatever partition count) is left alone.
    Waits until the new topics are in the broker's metadata.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    settings = KafkaSettings(bootstrap=bootstrap, security=security or KafkaSecurity())
    admin = KafkaAdminClient(
        **connection_config(settings, request_timeout_ms=int(timeout_s * 1000))
    )
    try:
        response = admin.create_topics(
            {
                name: {"num_partitions": partitions, "replication_factor": replication,
                       **({"configs": dict(configs[name])} if configs and name in configs
                          else {})}
                for name in wanted
            },
            timeout_ms=int(timeout_s * 1000),
            raise_errors=False,
        )
        created: list[str] = []
        for result in response["topics"]:
            error = for_code(result["error_code"])
            if result["error_code"] == 0:
                created.append(result["name"])
            elif error is not TopicAlreadyExistsError:
                raise KafkaError(
                    f"cannot create topic {result['name']}: {error.__name__} "
                    f"{result.get('error_message') or ''}".rstrip()
                )
        if created:
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
            log.info("created Kafka topics %s", ", ".join(created))
        return created
    finally:
        admin.close()
