"""The hub's query (Sonata event type names) to the webhook event types, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.order.rest.hub import SONATA_EVENTS, event_types
from services.order.webhooks.domain import EVENT_TYPES, ORDER_EVENT_TYPES


def test_sonata_names_expand_to_ours_once_each_in_order() -> None:
    assert event_types("eventType=productOrderStateChangeEvent,"
                       "cancelProductOrderStateChangeEvent") == list(ORDER_EVENT_TYPES)
    assert event_types("eventType=productStatusChangeEvent&eventType=idc.events.v1.DriftCleared"
                       ) == ["idc.events.v1.CircuitActivated", "idc.events.v1.CircuitDisconnected",
                             "idc.events.v1.ProvisioningFailed", "idc.events.v1.DriftCleared"]


def test_every_mapped_type_is_a_webhook_event_and_every_event_is_reachable() -> None:
    mapped = {t for types in SONATA_EVENTS.values() for t in types}
    assert mapped == set(EVENT_TYPES)
    assert set(event_types("")) == set(EVENT_TYPES)  # no query: everything


def test_an_unknown_name_is_passed_on_for_the_use_case_to_refuse() -> None:
    assert event_types("eventType=productCreateEvent") == ["productCreateEvent"]
    assert event_types("eventType=") == []


@pytest.mark.parametrize("query", ["type=x", "eventType", "eventType=a&state=b"])
def test_a_query_of_another_shape_is_refused_naming_the_field(query: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        event_types(query)
    assert [v.field for v in refused.value.violations] == ["query"]


def test_the_readme_table_names_every_sonata_type_and_what_it_stands_for() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    rows = re.findall(r"^  \| (`\w+`(?:, `\w+`)*) \| (.+) \|$", readme, re.M)
    table = {name.strip("`"): {t.strip("` ") for t in ours.split(",")}
             for names, ours in rows if names != "`eventType`" for name in names.split(", ")}
    assert table == {name: {t.removeprefix("idc.events.v1.") for t in types}
                     for name, types in SONATA_EVENTS.items()}
