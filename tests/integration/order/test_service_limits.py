"""Limits that protect the order service, at its real API: rate limits with RetryInfo, the
server's deadline for unary calls, the bounds on open streams, WatchOrder's lifetime (idcctl
resumes), undecodable bodies, and ErrorInfo reasons."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from rich.console import Console

from idc.order.v1 import order_pb2, order_service_pb2
from services.cli import main
from services.common.auth import Role
from services.common.call_limits import LimitSettings
from services.common.config import KafkaSettings
from services.common.ratelimit import Rate
from tests.integration.order.harness import (
    Client,
    OrderService,
    activated,
    running_order_service,
    spec,
    wait_for,
)

pytestmark = pytest.mark.integration


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The status details by kind: ErrorInfo, RetryInfo, BadRequest."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo,
                     error_details_pb2.BadRequest):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def reason(error: grpc.RpcError) -> str:
    info = details(error)["ErrorInfo"]
    assert info.domain == "idc.example"
    return str(info.reason)


def test_a_principal_over_its_rate_is_told_when_to_retry_and_recovers(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    limits = dataclasses.replace(LimitSettings(), rates={
        role: Rate(per_s=2.0, burst=5) for role in Role})
    with running_order_service(sqlite_database_url, kafka_settings, limits=limits) as svc:
        for _ in range(5):
            svc.alice.capacity()
        over = refused(svc.alice.capacity)
        assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(over) == "RATE_LIMITED"
        delay = details(over)["RetryInfo"].retry_delay.ToTimedelta().total_seconds()
        assert 0.0 < delay <= 0.5
        svc.bob.capacity()  # another principal has a bucket of its own
        time.sleep(delay)  # the delay the server told is the one that works
        svc.alice.capacity()


def test_calls_without_a_valid_token_are_limited_per_address(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    limits = dataclasses.replace(LimitSettings(), unauthenticated=Rate(per_s=1.0, burst=3))
    with running_order_service(sqlite_database_url, kafka_settings, limits=limits) as svc:
        stranger = dataclasses.replace(svc.alice, token="idc_guessed")
        for _ in range(3):
            error = refused(stranger.capacity)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason(error) == "UNAUTHENTICATED"
        over = refused(stranger.capacity)
        assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(over) == "AUTH_FAILURES_RATE_LIMITED"
        assert "RetryInfo" in details(over)
        # Health stays open to the address (probes, load balancers).
        with grpc.insecure_channel(svc.address) as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10).status \
                == health_pb2.HealthCheckResponse.SERVING
        # The address may call again once its bucket has a token (a second at this rate).
        wait_for(lambda: _answers(svc.alice.capacity), "the address's bucket", 10)


def _answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


@contextlib.contextmanager
def write_lock_held(database_url: str) -> Iterator[None]:
    """Hold what CreateOrder must wait for: SQLite's write lock, PostgreSQL's channel row."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.rollback()
            connection.close()
        return
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("SELECT name FROM channel_lock FOR UPDATE").fetchall()
        try:
            yield
        finally:
            conn.rollback()


def test_a_call_past_the_servers_deadline_answers_deadline_exceeded_and_saved_nothing(
    database_url: str, kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    limits = dataclasses.replace(LimitSettings(), unary_deadline_s=1.0)
    with running_order_service(database_url, kafka_settings, limits=limits) as svc:
        alice = svc.alice
        alice.capacity()
        before = alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders
        request = order_service_pb2.CreateOrderRequest(request_id=uuid.uuid4().hex,
                                                       spec=spec(100))
        caplog.set_level(logging.INFO)
        with write_lock_held(database_url):
            started = time.monotonic()
            # The client allows 30 s; the server's deadline is 1 s.
            late = refused(lambda: alice.call("CreateOrder", request))
            took = time.monotonic() - started
        assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late.details()
        assert reason(late) == "DEADLINE_EXCEEDED"
        assert 0.9 < took < 10.0, took
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        after = alice.call("ListOrders", order_service_pb2.ListOrdersRequest()).orders
        assert len(after) == len(before)
        # Nothing was saved, so the same request creates the order now.
        created = alice.call("CreateOrder", request).order
        assert created.state == order_pb2.ORDER_STATE_PENDING_APPROVAL


def _watch(client: Client, order_id: str) -> Any:
    return client.orders.WatchOrder(order_service_pb2.WatchOrderRequest(order_id=order_id),
                                    metadata=client.md, timeout=60)


def test_streams_are_bounded_per_principal_and_refused_at_once(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    limits = dataclasses.replace(LimitSettings(), streams_per_principal=2, streams_max=3)
    with running_order_service(sqlite_database_url, kafka_settings, limits=limits) as svc:
        order = svc.alice.create(100)
        mine = [_watch(svc.alice, order.id) for _ in range(2)]
        for call in mine:
            assert next(call).order.id == order.id  # open and waiting
        started = time.monotonic()
        third = refused(lambda: next(_watch(svc.alice, order.id)))
        assert time.monotonic() - started < 5.0
        assert third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(third) == "TOO_MANY_STREAMS"
        # Another principal may still watch, up to the server's bound.
        theirs = _watch(svc.olga, order.id)
        assert next(theirs).order.id == order.id
        full = refused(lambda: next(_watch(svc.sam, order.id)))
        assert reason(full) == "SERVER_STREAMS_EXHAUSTED"
        for call in [*mine, theirs]:
            call.cancel()
        # Closed streams give their slots back.
        wait_for(lambda: _answers(lambda: next(_watch(svc.alice, order.id))),
                 "a slot after the cancels", 15)


def test_unary_calls_are_answered_with_every_stream_slot_taken(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    defaults = LimitSettings()
    limits = dataclasses.replace(defaults, streams_per_principal=defaults.streams_max)
    with running_order_service(sqlite_database_url, kafka_settings, limits=limits) as svc:
        order = svc.alice.create(100)
        watches = [_watch(svc.alice, order.id) for _ in range(defaults.streams_max)]
        try:
            for call in watches:
                next(call)
            assert reason(refused(lambda: next(_watch(svc.bob, order.id)))) \
                == "SERVER_STREAMS_EXHAUSTED"
            # As many unary calls at once as there are streams: all answered, promptly.
            with futures.ThreadPoolExecutor(defaults.streams_max) as pool:
                started = time.monotonic()
                answers = list(pool.map(lambda _: svc.alice.order(order.id).id,
                                        range(defaults.streams_max)))
            assert answers == [order.id] * defaults.streams_max
            assert time.monotonic() - started < 10.0
        finally:
            for call in watches:
                call.cancel()


def test_watch_order_ends_at_its_lifetime_and_idcctl_resumes_to_the_final_state(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    limits = dataclasses.replace(LimitSettings(), stream_lifetime_s=1.0)
    with running_order_service(sqlite_database_url, kafka_settings, limits=limits) as svc:
        order = svc.alice.create(100)
        # The server ends a stream at its lifetime with OK, before the order is final.
        started = time.monotonic()
        first = list(_watch(svc.alice, order.id))
        assert 0.9 < time.monotonic() - started < 10.0
        assert [m.order.state for m in first] == [order_pb2.ORDER_STATE_PENDING_APPROVAL]

        out = io.StringIO()
        outcome: list[int] = []

        def watch() -> None:
            code, _ = main.run(
                ["--token", svc.alice.token, "--order-address", svc.address, "-o", "json",
                 "customer", "watch", order.id, "--timeout", "120"],
                console=Console(file=out, width=200), error_console=Console(file=out))
            outcome.append(code)

        def printed() -> list[dict[str, Any]]:
            return [json.loads(line) for line in out.getvalue().splitlines() if line]

        watcher = threading.Thread(target=watch)
        watcher.start()
        wait_for(printed, "the watch's first message", 30)
        # Each step happens after more than one stream lifetime: the watch was reopened.
        time.sleep(limits.stream_lifetime_s * 1.5)
        approved = order_pb2.OrderState.Name(svc.approve_both(order).state)
        wait_for(lambda: any(m["order"]["state"] == approved for m in printed()), approved, 30)
        time.sleep(limits.stream_lifetime_s * 1.5)
        svc.publish(activated(order), order.circuit_id)
        watcher.join(60)
        assert outcome == [0], out.getvalue()
        final = svc.alice.order(order.id)
        assert final.state == order_pb2.ORDER_STATE_COMPLETED
        messages = printed()
        # The first state, then every change once and in order, over several streams (and
        # states that changed without an audit entry, the provisioning step).
        already = len(messages[0]["order"].get("auditTrail", []))
        changes = [m["change"]["toState"] for m in messages[1:] if "change" in m]
        assert "change" not in messages[0]
        assert changes == [order_pb2.OrderState.Name(entry.to_state)
                           for entry in final.audit_trail[already:]], messages
        assert changes[-1] == "ORDER_STATE_COMPLETED"


def _create_raw(svc: OrderService, body: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(svc.address) as channel:
        create = channel.unary_unary("/idc.order.v1.OrderService/CreateOrder")
        return refused(lambda: create(body, metadata=svc.alice.md, timeout=10))


def test_a_body_that_is_not_the_message_answers_invalid_argument_without_a_traceback(
    sqlite_database_url: str, kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with running_order_service(sqlite_database_url, kafka_settings) as svc:
        caplog.set_level(logging.DEBUG)
        not_utf8 = b"\x0a\x02\xff\xfe"  # request_id (field 1, a string) of two non-UTF-8 bytes
        for body in (b"\xff\xff\xff\xff garbage", not_utf8):
            error = _create_raw(svc, body)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert reason(error) == "MALFORMED_REQUEST"
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_errors_carry_their_reason(
    sqlite_database_url: str, kafka_settings: KafkaSettings
) -> None:
    with running_order_service(sqlite_database_url, kafka_settings) as svc:
        missing = refused(lambda: svc.alice.order("ord-" + uuid.uuid4().hex))
        assert missing.code() == grpc.StatusCode.NOT_FOUND
        assert reason(missing) == "NOT_FOUND"
        invalid = refused(lambda: svc.alice.create(123))
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason(invalid) == "INVALID_REQUEST"
        assert "BadRequest" in details(invalid)
        denied = refused(lambda: svc.olga.create(100))
        assert reason(denied) == "PERMISSION_DENIED"

