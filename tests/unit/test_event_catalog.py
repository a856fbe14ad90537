from __future__ import annotations

from idc.events.v1 import circuit_pb2, provisioning_pb2
from services.billing.meter.service import CIRCUIT_EVENT_REGISTRY
from services.common.events.catalog import circuit_topic_registry
from services.common.events.envelope import event_type_of


def test_every_event_on_the_circuit_topic_decodes() -> None:
    registry = circuit_topic_registry()
    for message in (
        circuit_pb2.CircuitActivated,
        circuit_pb2.ProvisioningFailed,
        provisioning_pb2.ProvisioningPlanned,
        provisioning_pb2.ProvisioningProgress,
    ):
        assert registry.get(event_type_of(message)) is message


def test_the_meter_does_not_dead_letter_provisioning_plans() -> None:
    planned = event_type_of(provisioning_pb2.ProvisioningPlanned)
    assert CIRCUIT_EVENT_REGISTRY.get(planned) is provisioning_pb2.ProvisioningPlanned
