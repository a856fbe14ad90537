"""Personal data against the real order service and database: contacts are sealed in the
row (no plaintext in any column), bound to their row, shown only to the tenant and the ops
of the telco that bills it, and existing rows are sealed by the migration."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from rich.console import Console

from devstack.services import REPO_ROOT
from idc.ops.v1 import approval_service_pb2
from idc.order.v1 import order_pb2, order_service_pb2
from idc.type.v1 import side_pb2
from services.cli.main import run
from services.common import db
from services.common.auth import Principal, Role, SqlTokenStore
from services.common.config import KafkaSettings
from services.order import convert
from services.order.app import MIGRATIONS
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.disclosure import sealed_of
from tests.integration.order.harness import (
    PRINCIPALS,
    Client,
    OrderService,
    running_order_service,
    spec,
)

ANN = order_pb2.Contact(role="technical", name="Ann Lee-Personal", email="ann.lee@acme.example",
                        phone="+6561234567")
RAJ = order_pb2.Contact(role="billing", name="Raj Kumar-Personal", email="raj@acme.example",
                        phone="+6598765432")


def place(client: Client, *contacts: order_pb2.Contact) -> order_pb2.Order:
    order: order_pb2.Order = client.call("CreateOrder", order_service_pb2.CreateOrderRequest(
        request_id=uuid.uuid4().hex, spec=spec(100), contacts=contacts)).order
    return order


def listed(client: Client, order_id: str) -> order_pb2.Order:
    for order in client.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders:
        if order.id == order_id:
            found: order_pb2.Order = order
            return found
    raise AssertionError(f"{order_id} not listed for {client.principal.subject}")


def pending(client: Client, order_id: str) -> order_pb2.Order:
    for item in client.call("ListPendingApprovals",
                            approval_service_pb2.ListPendingApprovalsRequest()
                            ).pending_approvals:
        if item.order.id == order_id:
            found: order_pb2.Order = item.order
            return found
    raise AssertionError(f"{order_id} not pending for {client.principal.subject}")


def row_text(database_url: str, order_id: str) -> tuple[str, dict[str, Any]]:
    """Every column of the order's row, as text (bytes decoded leniently), and the row."""
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT * FROM orders WHERE id = :id"),
                                     {"id": order_id}).mappings().one()
    finally:
        engine.dispose()
    values = dict(row)
    text = " ".join(bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else str(v)
                    for v in values.values())
    return text, values


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == code, error.value.details()
    return str(error.value.details())


def test_contacts_are_shown_to_the_tenant_and_its_billing_telcos_ops_only(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        order = place(svc.alice, ANN, RAJ)
        # The customer gets its contacts back, in the reply and in every read.
        assert list(order.contacts) == [ANN, RAJ]
        assert list(svc.alice.order(order.id).contacts) == [ANN, RAJ]
        assert list(listed(svc.alice, order.id).contacts) == [ANN, RAJ]
        # acme is billed by the default billing entity, sg-telco: Singapore ops see them.
        for read in (svc.olga.order, lambda i: listed(svc.olga, i), lambda i: pending(svc.olga, i)):
            assert list(read(order.id).contacts) == [ANN, RAJ]
        # The other telco's ops and the billing admin read the order without them.
        for read in (svc.chen.order, lambda i: listed(svc.chen, i), lambda i: pending(svc.chen, i),
                     svc.bill.order, lambda i: listed(svc.bill, i)):
            shown = read(order.id)
            assert shown.id == order.id and shown.spec.bandwidth_mbps == 100
            assert not shown.contacts
        # Another tenant: no such order, exactly as for a missing id.
        assert "not found" in refused(lambda: svc.bob.order(order.id), grpc.StatusCode.NOT_FOUND)
        # An approval's reply follows the same rule.
        hashes = svc.plan_and_wait(order)
        assert not svc.chen.approve(order.id, hashes[side_pb2.SIDE_CHONGQING]).contacts
        approved = svc.olga.approve(order.id, hashes[side_pb2.SIDE_SINGAPORE])
        assert list(approved.contacts) == [ANN, RAJ]


def test_the_row_holds_only_ciphertext_bound_to_its_order(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        first, second = place(svc.alice, ANN), place(svc.alice, RAJ)
        text, row = row_text(database_url, first.id)
        for value in (ANN.name, ANN.email, ANN.phone, "Ann", "acme.example"):
            assert value not in text
        assert row["contacts_key_id"] == svc.contact_keys.active
        sealed = sealed_of(row)
        assert len(sealed.nonce) == 12
        assert ContactCipher(svc.contact_keys).open(first.id, sealed)[0]["email"] == ANN.email

        # The first order's ciphertext copied onto the second row does not open there: the
        # service refuses to answer rather than show another order's contacts.
        engine = db.make_engine(database_url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text(
                    "UPDATE orders SET contacts_key_id = :k, contacts_nonce = :n, "
                    "contacts_ciphertext = :c WHERE id = :id"),
                    {"k": sealed.key_id, "n": sealed.nonce, "c": sealed.ciphertext,
                     "id": second.id})
        finally:
            engine.dispose()
        refused(lambda: svc.alice.order(second.id), grpc.StatusCode.INTERNAL)
        assert not svc.chen.order(second.id).contacts  # nothing to open for who sees none
        assert list(svc.alice.order(first.id).contacts) == [ANN]


def stored_order(database_url: str, order_id: str) -> order_pb2.Order:
    """The order as the API shows it (without contacts), read from the database."""
    engine = db.make_engine(database_url)
    try:
        with db.make_session_factory(engine)() as session:
            return convert.order_by_id(session, order_id, None)
    finally:
        engine.dispose()


def _alembic(database_url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.normalise_url(database_url).replace("%", "%%"))
    return config


def test_the_migration_seals_the_contacts_of_existing_orders(
    database_url: str, kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders stored as plain JSON before migration 0007 (made here by downgrading) are
    sealed by the upgrade with the configured key set's active key, and read back."""
    service: OrderService
    with running_order_service(database_url, kafka_settings) as service:
        order = place(service.alice, ANN)
        keys = service.contact_keys
    monkeypatch.setenv("IDC_ORDER_CONTACT_KEYS", keys.to_json())
    command.downgrade(_alembic(database_url), "order_0006")
    text, row = row_text(database_url, order.id)
    assert ANN.email in text and "contacts_ciphertext" not in row  # plain JSON again
    # Before 0007 an approval named its approver by subject.
    engine = db.make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE approvals SET approver = 'olga@sg' "
                                       "WHERE order_id = :id AND side = 'SINGAPORE'"),
                               {"id": order.id})
    finally:
        engine.dispose()

    rotated = ContactKeySet("rotated-2", {**keys.keys, "rotated-2": ContactKeySet.generate(
        "rotated-2").keys["rotated-2"]})
    monkeypatch.setenv("IDC_ORDER_CONTACT_KEYS", rotated.to_json())
    db.migrate(database_url, MIGRATIONS)
    text, row = row_text(database_url, order.id)
    assert ANN.email not in text and "contacts" not in row
    assert row["contacts_key_id"] == "rotated-2"
    assert ContactCipher(rotated).open(order.id, sealed_of(row))[0]["name"] == ANN.name
    approvals = {a.side: a.approver for a in stored_order(database_url, order.id).approvals}
    assert approvals == {side_pb2.SIDE_SINGAPORE: PRINCIPALS["olga"].ref,
                         side_pb2.SIDE_CHONGQING: ""}


def test_reencrypt_moves_every_order_to_the_active_key_so_the_old_key_can_go(
    database_url: str, kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        orders = [place(svc.alice, ANN), place(svc.alice, RAJ)]
        old = svc.contact_keys
    new_key = ContactKeySet.generate("2027-01").keys["2027-01"]
    rotated = ContactKeySet("2027-01", {**old.keys, "2027-01": new_key})
    monkeypatch.setenv("IDC_ORDER_DATABASE_URL", database_url)
    monkeypatch.setenv("IDC_ORDER_CONTACT_KEYS", rotated.to_json())
    out = io.StringIO()
    code, _ = run(["admin", "contacts", "reencrypt", "-o", "json"],
                  console=Console(file=out, soft_wrap=True))
    assert code == 0, out.getvalue()
    report = json.loads(out.getvalue())
    assert report["reencrypted"] == 2 and report["orders_per_key"] == {"2027-01": 2}
    # A second run has nothing to do.
    code, _ = run(["admin", "contacts", "reencrypt", "-o", "json"],
                  console=Console(file=io.StringIO(), soft_wrap=True))
    assert code == 0
    # The old key leaves the set; every order still opens.
    only_new = ContactCipher(ContactKeySet("2027-01", {"2027-01": new_key}))
    for order, contact in zip(orders, (ANN, RAJ), strict=True):
        _, row = row_text(database_url, order.id)
        assert only_new.open(order.id, sealed_of(row))[0]["email"] == contact.email


def test_the_order_service_refuses_to_start_without_a_key_set_outside_dev_mode(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("IDC_ORDER_CONTACT_KEYS", "IDC_ORDER_CONTACT_KEYS_FILE")}
    env.update(IDC_KAFKA_BOOTSTRAP=kafka_settings.bootstrap, IDC_VAR_DIR=str(tmp_path),
               IDC_ORDER_LISTEN="127.0.0.1:0", IDC_DEV_MODE="false")
    done = subprocess.run([sys.executable, "-m", "services.order"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "IDC_ORDER_CONTACT_KEYS_FILE" in done.stderr and "IDC_DEV_MODE" in done.stderr
    assert not (tmp_path / "order-contact-keys.json").exists()


def test_a_tenant_billed_by_the_chongqing_telco_shows_its_contacts_to_chongqing_ops(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(database_url, kafka_settings) as svc:
        yangtze = Principal("li@yangtze", Role.CUSTOMER, tenant="yangtze-cq")
        store = SqlTokenStore(db.make_session_factory(db.make_engine(database_url)),
                              "test-pepper")
        customer = dataclasses.replace(svc.alice, principal=yangtze, token=store.issue(yangtze))
        order = place(customer, ANN)
        assert list(customer.order(order.id).contacts) == [ANN]
        assert list(svc.chen.order(order.id).contacts) == [ANN]
        assert not svc.olga.order(order.id).contacts
        assert "not found" in refused(lambda: svc.alice.order(order.id),
                                      grpc.StatusCode.NOT_FOUND)
