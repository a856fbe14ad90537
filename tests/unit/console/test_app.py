"""The console's web layer against a fake of the gRPC APIs: sessions, cookies, CSRF,
sign-in refusals, escaping of what customers wrote, and what is sent to the APIs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from idc.ops.v1 import approval_service_pb2 as approvals_pb
from idc.order.v1 import capacity_pb2, circuit_pb2, order_pb2
from idc.order.v1 import order_service_pb2 as orders_pb
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.type.v1 import router_payload_pb2, side_pb2
from services.console.app import make_console_app
from services.console.backend import Backend, Refused
from services.console.sessions import COOKIE_NAME, SessionStore

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & \'quoted\''
OPS = "ops-token"
CUSTOMER = "customer-token"
PAYLOAD = "<config><cir>100000000</cir></config>"


def _order(state: order_pb2.OrderState.ValueType = order_pb2.ORDER_STATE_PENDING_APPROVAL
           ) -> order_pb2.Order:
    order = order_pb2.Order(
        id="ord-1", tenant_id="acme", type=order_pb2.ORDER_TYPE_NEW, state=state,
        circuit_id="cct-1", requested_by="alice@acme",
        spec=circuit_pb2.CircuitSpec(a_end_port_id="sg-edge-1:xe-0/0/2",
                                     z_end_port_id="cq-edge-1:XGE0/0/2", a_end_vlan_id=3901,
                                     z_end_vlan_id=3901, bandwidth_mbps=100,
                                     customer_reference=HOSTILE, description=HOSTILE))
    order.approvals.add(side=side_pb2.SIDE_SINGAPORE, state=order_pb2.APPROVAL_STATE_PENDING)
    order.audit_trail.add(actor="alice@acme", reason=HOSTILE,
                          to_state=order_pb2.ORDER_STATE_PENDING_APPROVAL)
    return order


class FakeApis:
    """What the order and provisioning services would answer; records what was asked."""

    def __init__(self) -> None:
        self.approved: list[tuple[str, str]] = []
        self.rejected: list[tuple[str, str]] = []
        # What a provisioning service with DryRun's per-router difference answers.
        self.dry_run_routers: list[prov_pb.RouterDryRun] = []
        # What the drift watch last saw (ListSyncStatus).
        self.watched: list[prov_pb.CircuitSyncStatus] = []
        self.payload = router_payload_pb2.RouterPayload(
            side=side_pb2.SIDE_SINGAPORE, telco_id="sg", router_name="sg-edge-1",
            platform="openconfig", circuit_id="cct-1", content=PAYLOAD,
            sha256=hashlib.sha256(PAYLOAD.encode()).hexdigest())
        # Whether the pending approval is a sandbox tenant's order.
        self.sandbox = False

    def _ops(self, token: str) -> None:
        if token == CUSTOMER:
            raise Refused("order", "PERMISSION_DENIED", "this call is for ops; your token is "
                                                        "customer")
        if token != OPS:
            raise Refused("order", "UNAUTHENTICATED", "unknown token")

    async def pending(self, token: str) -> list[approvals_pb.PendingApproval]:
        self._ops(token)
        return [approvals_pb.PendingApproval(order=_order(), payload=self.payload,
                                             sandbox=self.sandbox)]

    async def approve(self, token: str, order_id: str, payload_sha256: str,
                      comment: str) -> order_pb2.Order:
        self._ops(token)
        if payload_sha256 != self.payload.sha256:
            raise Refused("order", "FAILED_PRECONDITION", "the payload changed")
        self.approved.append((order_id, payload_sha256))
        return _order()

    async def reject(self, token: str, order_id: str, reason: str) -> order_pb2.Order:
        self._ops(token)
        self.rejected.append((order_id, reason))
        return _order(order_pb2.ORDER_STATE_REJECTED)

    async def order(self, token: str, order_id: str) -> order_pb2.Order:
        self._ops(token)
        return _order()

    async def watch(self, token: str,
                    order_id: str) -> AsyncIterator[orders_pb.WatchOrderResponse]:
        self._ops(token)
        yield orders_pb.WatchOrderResponse(order=_order(order_pb2.ORDER_STATE_COMPLETED))

    async def circuit(self, token: str, circuit_id: str) -> circuit_pb2.Circuit:
        return circuit_pb2.Circuit(id=circuit_id, state=circuit_pb2.CIRCUIT_STATE_ACTIVE,
                                   description=HOSTILE)

    async def circuits(self, token: str) -> list[circuit_pb2.Circuit]:
        circuit = circuit_pb2.Circuit(
            id="cct-1", tenant_id="acme", state=circuit_pb2.CIRCUIT_STATE_ACTIVE,
            bandwidth_mbps=100, description=HOSTILE,
            a_end=circuit_pb2.CircuitEnd(router_name="sg-edge-1", port_name="xe-0/0/2"),
            z_end=circuit_pb2.CircuitEnd(router_name="cq-edge-1", port_name="XGE0/0/2"))
        return [circuit]

    async def completed_orders(self, token: str) -> list[order_pb2.Order]:
        done = _order(order_pb2.ORDER_STATE_COMPLETED)
        done.complete_time.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
        return [done]

    async def capacity(self, token: str) -> capacity_pb2.Capacity:
        return capacity_pb2.Capacity(
            channel_capacity_mbps=260_000, channel_committed_mbps=100,
            ports=[capacity_pb2.PortCapacity(port_id="sg-edge-1:xe-0/0/2", speed_mbps=10_000,
                                             committed_mbps=100)])

    async def check_sync(self, token: str,
                         device_names: Sequence[str] = ()) -> list[prov_pb.DeviceSyncStatus]:
        return [prov_pb.DeviceSyncStatus(device_name="sg-edge-1", in_sync=True)]

    async def devices(self, token: str) -> list[prov_pb.Device]:
        return []

    async def redeploy(self, token: str, circuit_id: str) -> prov_pb.RedeployResponse:
        return prov_pb.RedeployResponse(repair=prov_pb.Repair(repair_id="rep-1"))

    async def circuit_config(self, token: str,
                             circuit_id: str) -> prov_pb.GetCircuitConfigResponse:
        raise Refused("provisioning", "NOT_FOUND", "circuit is unknown")

    async def dry_run(self, token: str, order_id: str) -> prov_pb.DryRunResponse:
        return prov_pb.DryRunResponse(payloads=[self.payload], routers=self.dry_run_routers)

    async def sync_statuses(self, token: str, circuit_id: str = "",
                            not_in_sync_only: bool = False
                            ) -> list[prov_pb.CircuitSyncStatus]:
        return [w for w in self.watched
                if (not circuit_id or w.circuit_id == circuit_id)
                and not (not_in_sync_only and w.state == prov_pb.SYNC_STATE_IN_SYNC)]


@pytest.fixture
def apis() -> FakeApis:
    return FakeApis()


@pytest.fixture
def client(apis: FakeApis) -> Iterator[TestClient]:
    backend: Backend = apis
    app, _ = make_console_app(lambda: backend, SessionStore(3600))
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, token: str = OPS) -> Any:
    page = client.get("/signin")
    return client.post("/signin", data={"csrf": csrf_of(page.text), "token": token})


def test_session_cookie_is_httponly_and_samesite_and_secure_only_over_https(
        client: TestClient) -> None:
    cookie = client.get("/signin").headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()
    https = TestClient(client.app, base_url="https://console.example", follow_redirects=False)
    assert "secure" in https.get("/signin").headers["set-cookie"].lower()


def test_signing_in_replaces_the_session_and_shows_the_telcos_approvals(
        client: TestClient) -> None:
    before = client.get("/signin")
    anonymous = before.cookies[COOKIE_NAME]
    reply = client.post("/signin", data={"csrf": csrf_of(before.text), "token": OPS})
    assert reply.status_code == 303 and reply.headers["location"] == "/approvals"
    assert reply.cookies[COOKIE_NAME] != anonymous
    page = client.get("/approvals")
    assert page.status_code == 200 and "telco sg" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(("token", "words"), [
    (CUSTOMER, "not an operations token"),
    ("idc_nobody", "does not know this token"),
])
def test_non_ops_tokens_cannot_sign_in(client: TestClient, token: str, words: str) -> None:
    reply = sign_in(client, token)
    assert reply.headers["location"] == "/signin"
    assert words in client.get("/signin").text
    assert client.get("/approvals").headers["location"] == "/signin"


def test_forged_or_missing_csrf_token_changes_nothing(client: TestClient, apis: FakeApis
                                                      ) -> None:
    sign_in(client)
    for forged in ({"csrf": "forged"}, {}):
        reply = client.post("/approvals/ord-1/approve",
                            data={**forged, "payload_sha256": apis.payload.sha256})
        assert reply.status_code == 403 and "CSRF check failed" in reply.text
    reply = client.post("/approvals/ord-1/reject", data={"csrf": "x", "reason": "no"})
    assert reply.status_code == 403
    assert apis.approved == [] and apis.rejected == []


def test_sign_in_form_itself_needs_the_csrf_token(client: TestClient) -> None:
    client.get("/signin")
    reply = client.post("/signin", data={"csrf": "forged", "token": OPS})
    assert reply.status_code == 403
    assert client.get("/approvals").headers["location"] == "/signin"


def test_approve_sends_the_hash_shown_and_refusals_are_shown_in_words(
        client: TestClient, apis: FakeApis) -> None:
    sign_in(client)
    page = client.get("/approvals").text
    shown = re.search(r'name="payload_sha256" value="([0-9a-f]{64})"', page)
    assert shown and shown.group(1) == apis.payload.sha256
    reply = client.post("/approvals/ord-1/approve",
                        data={"csrf": csrf_of(page), "payload_sha256": shown.group(1)})
    assert reply.headers["location"] == "/orders/ord-1"
    assert apis.approved == [("ord-1", apis.payload.sha256)]
    client.post("/approvals/ord-1/approve", data={"csrf": csrf_of(page), "payload_sha256": "0"})
    assert "Approval refused: the payload changed" in client.get("/approvals").text


def test_reject_needs_a_reason(client: TestClient, apis: FakeApis) -> None:
    sign_in(client)
    csrf = csrf_of(client.get("/approvals").text)
    client.post("/approvals/ord-1/reject", data={"csrf": csrf, "reason": "  "})
    assert apis.rejected == []
    client.post("/approvals/ord-1/reject", data={"csrf": csrf, "reason": "port is reserved"})
    assert apis.rejected == [("ord-1", "port is reserved")]


@pytest.mark.parametrize("path", ["/approvals", "/orders/ord-1", "/circuits",
                                  "/circuits/cct-1"])
def test_what_customers_wrote_is_shown_as_text(client: TestClient, path: str) -> None:
    sign_in(client)
    page = client.get(path)
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" \
        in page.text


def test_approvals_page_shows_the_payload_difference(client: TestClient) -> None:
    sign_in(client)
    page = client.get("/approvals").text
    assert "carries nothing for this circuit yet" in page
    assert '<span class="added">+ &lt;config&gt;&lt;cir&gt;100000000' in page
    assert "A dry run now renders the same payload." in page


def test_approvals_page_says_which_orders_are_sandbox_ones(client: TestClient,
                                                          apis: FakeApis) -> None:
    sign_in(client)
    assert "sandbox: simulated routers" not in client.get("/approvals").text
    apis.sandbox = True
    assert "sandbox: simulated routers, never invoiced" in client.get("/approvals").text


def test_approvals_page_prefers_the_dry_runs_leaf_difference(client: TestClient,
                                                              apis: FakeApis) -> None:
    router = prov_pb.RouterDryRun(device_name="sg-edge-1", payload=apis.payload,
                                  running_config=f"/x/description = {HOSTILE}")
    router.differences.add(path="/x/rate-limit/ingress/config/cir", intended="300000000",
                           actual="100000000")
    apis.dry_run_routers = [router]
    sign_in(client)
    page = client.get("/approvals").text
    assert "From the dry run: what this payload changes on sg-edge-1" in page
    assert ('<td><code>/x/rate-limit/ingress/config/cir</code></td>'
            '<td class="removed">100000000</td><td class="added">300000000</td>') in page
    assert "Computed by the console" not in page and '<pre class="diff">' not in page
    assert "<script>alert" not in page


def test_order_events_stream_the_order_and_end(client: TestClient) -> None:
    sign_in(client)
    with client.stream("GET", "/orders/ord-1/events") as stream:
        body = "".join(stream.iter_text())
    assert '"state": "COMPLETED"' in body and '"circuit_state": "ACTIVE"' in body
    assert body.rstrip().endswith("event: end\ndata: {}")


def test_capacity_page_draws_the_chart(client: TestClient) -> None:
    sign_in(client)
    page = client.get("/capacity").text
    assert 'id="capacity-chart"' in page and 'class="committed-line" d="M' in page
    assert 'data-port="sg-edge-1:xe-0/0/2"' in page


def test_signed_out_pages_and_streams_need_a_session(client: TestClient) -> None:
    for path in ("/approvals", "/circuits", "/capacity", "/orders/ord-1"):
        assert client.get(path).headers["location"] == "/signin"
    assert client.get("/orders/ord-1/events").status_code == 401


def test_a_drifted_circuit_raises_the_banner_and_shows_per_circuit(
        client: TestClient, apis: FakeApis) -> None:
    sign_in(client)
    assert 'id="drift-banner"' not in client.get("/circuits").text
    since = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    drifted = prov_pb.CircuitSyncStatus(
        circuit_id="cct-1", device_name="cq-edge-1", state=prov_pb.SYNC_STATE_DRIFTED,
        detail="absent from the router")
    drifted.since.FromDatetime(since)
    apis.watched = [drifted, prov_pb.CircuitSyncStatus(
        circuit_id="cct-1", device_name="sg-edge-1", state=prov_pb.SYNC_STATE_IN_SYNC)]
    listing = client.get("/circuits").text
    assert 'id="drift-banner"' in listing and "1 circuit(s) drifted" in listing
    assert "cq-edge-1: drifted since 2026-12-02 12:00" in listing
    assert "sg-edge-1: in sync since" not in listing, "only what is not in sync is listed"
    page = client.get("/circuits/cct-1").text
    assert 'id="drift-banner"' in page and "absent from the router" in page
