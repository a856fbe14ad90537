"""The usage consumer's lag behind the broker, for the usage completeness API."""

from __future__ import annotations

import logging

from services.billing.domain.close import PartitionLag
from services.billing.ingest import USAGE_GROUP
from services.common.config import KafkaSettings
from services.common.events.metrics import ConsumerLag
from services.common.events.topics import USAGE_SAMPLES

log = logging.getLogger(__name__)


class BrokerUsageLag:
    """Per partition of the usage topic, the records the billing usage consumer has not
    committed; None when the broker does not answer within its request timeout."""

    def __init__(
        self, settings: KafkaSettings, group_id: str = USAGE_GROUP, topic: str = USAGE_SAMPLES
    ) -> None:
        self._lag = ConsumerLag(settings, group_id, [topic])

    def __call__(self) -> list[PartitionLag] | None:
        try:
            readings = self._lag.read()
        except Exception as error:
            log.warning("usage consumer lag not read from the broker: %s", error)
            return None
        return [
            PartitionLag(
                str(r.attributes["messaging.destination.name"]),
                int(r.attributes["messaging.destination.partition.id"]),
                int(r.value),
            )
            for r in readings
        ]

    def close(self) -> None:
        self._lag.close()
