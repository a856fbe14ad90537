"""Channel-scale rows (issue 18 part 3): the channel's circuits active in the order
service's database while it lists and answers capacity, and the sizes of the scale rows
(`--scale`): `bench` by default (a few hundred circuits, fits `make bench`), `channel` for
the channel's physical scale (260 Gbps at the smallest circuit, 10 Mbps: 26,000).

The listing rows' circuits are seeded in the database, not ordered through the API (26,000
admissions would take most of an hour here): one order is placed through CreateOrder and
its rows (circuits, orders, port_vlans, approvals, order_audit) are copied by SQL, one copy
per circuit with its own ids, tenant, ports and VLANs, ACTIVE and COMPLETED. The audit
chain's links are not copied (no listing reads them). The catalogue is the bench's own
(`IDC_ORDER_CATALOGUE_FILE`): several routers per side with enough 100 Gbps ports that
26,000 circuits fit the ports' VLANs (3,900 a port).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg

from bench.harness import Results, Row, memory_row
from bench.load import Metadata, raw_caller, raw_method, run_closed_loop
from bench.order import SERVICE, empty_server
from bench.stack import KEYS, postgres_database, running_service
from idc.order.v1 import circuit_pb2, order_service_pb2
from services.common.auth import Principal, Role
from services.common.grpc_server import call_metadata
from services.order.contacts import KEYS_ENV, ContactCipher, ContactKeySet, SealedContacts
from services.order.tables import ApprovalRow, AuditRow, CircuitRow, OrderRow

CHANNEL_CIRCUITS = 26_000
CIRCUIT_MBPS = 10
ROUTERS_PER_SIDE = 4
PORTS_PER_ROUTER = 2
VLAN_FIRST, VLAN_LAST = 100, 3999
# The tenant with 2,000 circuits at the channel's scale; its share of smaller runs.
BIG_TENANT, BIG_TENANT_CIRCUITS = "acme", 2_000
PAGE_SIZE = 50
# The order service's contact key, known here: every copied order's contacts are sealed
# again under its own id (the order id is the seal's associated data).
CONTACT_KEYS = ContactKeySet.generate("bench-1")
LIST_CIRCUITS, LIST_ORDERS = SERVICE + "ListCircuits", SERVICE + "ListOrders"
GET_CAPACITY = SERVICE + "GetCapacity"


PARTS = ("listing", "provisioning", "billing")


@dataclass(frozen=True)
class ScaleSizes:
    circuits: int  # active circuits (listing rows) and circuits provisioned
    calls: int  # calls per listing figure
    batch: int  # circuits approved at once while the routers fill
    checkpoints: int  # fill levels at which the one-per-transaction floor is measured
    singles: int  # single circuits approved one after another with the routers full
    billing: int  # circuits of the month-end run at both ends
    parts: tuple[str, ...] = PARTS


SIZES = {
    "bench": ScaleSizes(circuits=400, calls=100, batch=100, checkpoints=2, singles=5,
                        billing=100),
    "channel": ScaleSizes(circuits=CHANNEL_CIRCUITS, calls=200, batch=500, checkpoints=5,
                          singles=10, billing=CHANNEL_CIRCUITS),
}


def ports(side: str) -> list[str]:
    """The bench catalogue's port ids of one side ("sg" or "cq"), in a fixed order."""
    name = "et-0/0/{}" if side == "sg" else "HGE1/0/{}"
    return [f"{side}-edge-{router}:{name.format(port)}"
            for router in range(1, ROUTERS_PER_SIDE + 1) for port in range(PORTS_PER_ROUTER)]


def write_catalogue(path: Path) -> Path:
    """A catalogue of ROUTERS_PER_SIDE sites per side, one router each, with
    PORTS_PER_ROUTER 100 Gbps ports of 3,900 VLANs each."""
    lines = []
    for telco, name, side in (("sg", "Singapore Telco", "SINGAPORE"),
                              ("cq", "Chongqing Telco", "CHONGQING")):
        lines += ["[[telcos]]", f'id = "{telco}"', f'name = "{name}"', f'side = "{side}"', ""]
    for telco, side, platform in (("sg", "SINGAPORE", "openconfig"),
                                  ("cq", "CHONGQING", "cq-vendor")):
        by_router: dict[str, list[str]] = {}
        for port_id in ports(telco):
            router, _, interface = port_id.partition(":")
            by_router.setdefault(router, []).append(interface)
        for router, interfaces in by_router.items():
            lines += ["[[sites]]", f'id = "{router}-site"', f'name = "{router} site"',
                      f'side = "{side}"', f'telco = "{telco}"', 'city = "bench"',
                      f'router = "{router}"', f'platform = "{platform}"', "ports = ["]
            lines += [f'    {{ name = "{interface}", speed_mbps = 100000, '
                      f"vlan_first = {VLAN_FIRST}, vlan_last = {VLAN_LAST} }},"
                      for interface in interfaces]
            lines += ["]", ""]
    path.write_text("\n".join(lines))
    return path


def big_tenant_circuits(circuits: int) -> int:
    """2,000 of the channel's 26,000; the same share of a smaller run (at least one)."""
    return max(1, circuits * BIG_TENANT_CIRCUITS // CHANNEL_CIRCUITS)


def _copy_sql(table: str, columns: Sequence[str], overrides: dict[str, str],
              template_column: str) -> str:
    """INSERT one copy of the template's rows of ``table`` per g in the series, with
    ``overrides`` (SQL in g and the template row t) in place of the template's columns."""
    names = [c for c in columns if c in overrides or c != "id" or table != "order_audit"]
    values = [overrides.get(c, f"t.{c}") for c in names]
    return (f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "
            f"FROM {table} t, generate_series(0, %(count)s - 1) g "
            f"WHERE t.{template_column} = %(template)s")


def seed(url: str, template_order: str, template_circuit: str, circuits: int) -> None:
    """``circuits`` copies of the template order and its circuit, ACTIVE and COMPLETED,
    then the template itself removed; ports and VLANs as the admission would give them."""
    a_ports, z_ports = ports("sg"), ports("cq")
    big = big_tenant_circuits(circuits)
    circuit_id = "'CKT-SCALE-' || lpad(g::text, 5, '0')"
    order_id = "'ORD-SCALE-' || lpad(g::text, 5, '0')"
    # Oldest first, a second apart, up to now (one transaction: now() is one moment).
    moment = "now() - (%(count)s - g) * interval '1 second'"
    where = {
        "tenant_id": f"CASE WHEN g < {big} THEN '{BIG_TENANT}' "
                     "ELSE 'scale-' || lpad((g / 20)::text, 4, '0') END",
        "a_port_id": f"(%(a_ports)s::text[])[mod(g, {len(a_ports)}) + 1]",
        "z_port_id": f"(%(z_ports)s::text[])[mod(g, {len(z_ports)}) + 1]",
        "a_vlan": f"{VLAN_FIRST} + g / {len(a_ports)}",
        "z_vlan": f"{VLAN_FIRST} + g / {len(z_ports)}",
        "created_at": moment, "updated_at": moment,
    }
    statements = [
        _copy_sql("circuits", [c.key for c in CircuitRow.__table__.columns], {
            **where, "id": circuit_id, "state": "'ACTIVE'", "created_by_order_id": order_id,
            "pending_order_id": "NULL", "activated_at": moment,
        }, "id"),
        _copy_sql("orders", [c.key for c in OrderRow.__table__.columns], {
            **where, "id": order_id, "state": "'COMPLETED'", "circuit_id": circuit_id,
            "request_id": "'scale-' || g", "reserved_mbps": "0", "completed_at": moment,
            "approved_at": moment,
        }, "id"),
        _copy_sql("approvals", [c.key for c in ApprovalRow.__table__.columns], {
            "order_id": order_id, "state": "'APPROVED'", "decided_at": moment,
            "approver": "'bench@telco'",
        }, "order_id"),
        _copy_sql("order_audit", [c.key for c in AuditRow.__table__.columns], {
            "order_id": order_id, "at": moment}, "order_id"),
    ]
    params = {"count": circuits, "a_ports": a_ports, "z_ports": z_ports}
    with psycopg.connect(url) as connection:
        template_rows = {"circuits": ("id", template_circuit),
                         "orders": ("id", template_order),
                         "approvals": ("order_id", template_order),
                         "order_audit": ("order_id", template_order)}
        for statement, template in zip(statements, template_rows.values(), strict=True):
            connection.execute(statement.encode(), {**params, "template": template[1]})
        _reseal(connection, template_order, circuits)
        connection.execute("DELETE FROM port_vlans WHERE circuit_id = %s", (template_circuit,))
        connection.execute(
            "INSERT INTO port_vlans (port_id, vlan_id, circuit_id) "
            "SELECT a_port_id, a_vlan, id FROM circuits WHERE id LIKE 'CKT-SCALE-%' "
            "UNION ALL SELECT z_port_id, z_vlan, id FROM circuits WHERE id LIKE 'CKT-SCALE-%'")
        for table, (column, value) in reversed(template_rows.items()):
            connection.execute(f"DELETE FROM {table} WHERE {column} = %s".encode(), (value,))
        connection.commit()
        connection.execute("ANALYZE")


def _reseal(connection: psycopg.Connection[Any], template_order: str, circuits: int) -> None:
    """The template's contacts sealed for each copy under the copy's order id."""
    cipher = ContactCipher(CONTACT_KEYS)
    row = connection.execute(
        "SELECT contacts_key_id, contacts_nonce, contacts_ciphertext FROM orders WHERE id = %s",
        (template_order,)).fetchone()
    assert row is not None, "the template order is gone"
    contacts = cipher.open(template_order, SealedContacts(*row))
    sealed = ((f"ORD-SCALE-{g:05d}", cipher.seal(f"ORD-SCALE-{g:05d}", contacts))
              for g in range(circuits))
    with connection.cursor() as cursor:
        cursor.executemany(
            "UPDATE orders SET contacts_key_id = %s, contacts_nonce = %s, "
            "contacts_ciphertext = %s WHERE id = %s",
            [(s.key_id, s.nonce, s.ciphertext, order_id) for order_id, s in sealed])


def _template_order(channel: grpc.Channel, metadata: Metadata) -> tuple[str, str]:
    spec = circuit_pb2.CircuitSpec(
        a_end_port_id=ports("sg")[0], z_end_port_id=ports("cq")[0],
        bandwidth_mbps=CIRCUIT_MBPS, term_months=12, currency_code="SGD",
        customer_reference="BENCH-SCALE", description="benchmark circuit",
    )
    request = order_service_pb2.CreateOrderRequest(request_id=uuid.uuid4().hex, spec=spec)
    reply = raw_method(channel, SERVICE + "CreateOrder")(
        request.SerializeToString(), metadata=metadata, timeout=30)
    order = order_service_pb2.CreateOrderResponse.FromString(reply).order
    return order.id, order.circuit_id


def _listing(results: Results, workload: str, workdir: Path, channel: grpc.Channel,
             metadata: Metadata, calls: int) -> None:
    """First pages of ListCircuits and ListOrders and a GetCapacity, one call at a time,
    next to an empty handler answering the same number of bytes."""
    requests = {
        LIST_CIRCUITS: order_service_pb2.ListCircuitsRequest(page_size=PAGE_SIZE),
        LIST_ORDERS: order_service_pb2.ListOrdersRequest(page_size=PAGE_SIZE),
        GET_CAPACITY: order_service_pb2.GetCapacityRequest(),
    }
    raw = {path: request.SerializeToString() for path, request in requests.items()}
    sizes = {path: len(raw_method(channel, path)(body, metadata=metadata, timeout=60))
             for path, body in raw.items()}
    with empty_server(workdir, sizes) as address, grpc.insecure_channel(address) as floor:
        for path, body in raw.items():
            product = run_closed_loop(raw_caller(channel, path, [body] * calls, metadata),
                                      calls, 1)
            empty = run_closed_loop(raw_caller(floor, path, [body] * calls, metadata),
                                    calls, 1)
            label = f"{workload} {path.rsplit('/', 1)[-1]}"
            results.add(Row(label, "p50", "ms", product.p50_ms, empty.p50_ms))
            results.add(Row(label, "p99", "ms", product.p99_ms, empty.p99_ms))


def run_listing(results: Results, workdir: Path, bootstrap: str, sizes: ScaleSizes) -> None:
    circuits = sizes.circuits
    catalogue = write_catalogue(workdir / "scale-catalogue.toml")
    with postgres_database("scale") as url:
        env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_ORDER_DATABASE_URL": url,
               "IDC_ORDER_CATALOGUE_FILE": str(catalogue), KEYS_ENV: CONTACT_KEYS.to_json()}
        with running_service("order", workdir, env, label="order-scale") as service:
            tenant: Metadata = tuple(call_metadata(KEYS.mint(
                Principal("bench@acme", Role.CUSTOMER, tenant=BIG_TENANT))))
            ops: Metadata = tuple(call_metadata(KEYS.mint(
                Principal("ops@sg", Role.OPS, telco="sg"))))
            with service.tls.channel(service.address) as channel:
                seed(url, *_template_order(channel, tenant), circuits)
                big = big_tenant_circuits(circuits)
                _listing(results, f"scale {circuits} active, tenant with {big}", workdir,
                         channel, tenant, sizes.calls)
                _listing(results, f"scale {circuits} active, ops over all", workdir,
                         channel, ops, sizes.calls)
            results.add(memory_row(f"scale {circuits} active", service))
