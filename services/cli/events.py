"""``idcctl ops dlq`` and ``idcctl ops outbox``: lost and poisoned events (admin token).

Each service offers ``idc.ops.v1.EventAdminService`` for its own outbox; a dead-letter
command goes to the service that produces the topic (``--service`` picks another), a
republish to the service named.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf import descriptor_pool, message_factory, text_format
from rich.console import Console

import idc.events.v1.circuit_pb2
import idc.events.v1.order_pb2
import idc.events.v1.provisioning_pb2
import idc.events.v1.usage_pb2  # noqa: F401  (the event types `dlq show` decodes)
from idc.ops.v1 import event_admin_service_pb2 as pb
from services.cli import render
from services.cli.client import DEFAULT_ADDRESSES
from services.cli.commands import Context, moment, timestamp
from services.cli.errors import CliError, ExitCode
from services.cli.render import Result
from services.common.events import topics

# Who writes each topic: its outbox is where a replay goes by default.
TOPIC_OWNERS = {
    topics.ORDER_EVENTS: "order",
    topics.PROVISIONING_COMMANDS_SG: "provisioning",
    topics.PROVISIONING_COMMANDS_CQ: "provisioning",
    topics.PROVISIONING_REPLIES: "provisioning",
    topics.CIRCUIT_EVENTS: "provisioning",
    topics.USAGE_SAMPLES: "meter",
}
SERVICES = sorted(DEFAULT_ADDRESSES)
_ERROR_WIDTH = 120


def dead_letter_place(raw: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` in the dead-letter topic (argparse type)."""
    partition, sep, offset = raw.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not PARTITION:OFFSET (e.g. 2:15, as `ops dlq list` shows it)"
        )
    return int(partition), int(offset)


def service_for(args: argparse.Namespace) -> str:
    """The service a command talks to (kept on ``args`` for the error message)."""
    service: str | None = args.service
    if service is None:
        topic = args.topic.removesuffix(topics.DLQ_SUFFIX)
        # The longest known topic the name starts with (IDC_PROVISIONING_TOPIC_SUFFIX and
        # the like append to it).
        owners = [t for t in TOPIC_OWNERS if topic.startswith(t)]
        if not owners:
            raise CliError(
                f"unknown topic {args.topic!r}: the topics are "
                f"{', '.join(sorted(TOPIC_OWNERS))}; for another one give --service",
                ExitCode.USAGE,
            )
        service = TOPIC_OWNERS[max(owners, key=len)]
    args.target_service = service
    return service


def _place(dead: pb.DeadLetter) -> str:
    return f"{dead.partition}:{dead.offset}"


def _origin(dead: pb.DeadLetter) -> str:
    return f"{dead.original_topic}[{dead.original_partition}]@{dead.original_offset}"


def _header_lines(dead: pb.DeadLetter) -> str:
    return "\n".join(f"{h.name}={h.value.decode('utf-8', 'replace')}" for h in dead.headers)


def _replayed(dead: pb.DeadLetter) -> str:
    return "\n".join(
        f"{r.actor} {render.when(r.replay_time)} as {r.replay_id}" for r in dead.replays
    )


def dlq_list(ctx: Context, args: argparse.Namespace) -> Result:
    service = service_for(args)
    reply = ctx.api.call(
        service, ctx.api.event_admin(service).ListDeadLetters,
        pb.ListDeadLettersRequest(topic=args.topic, page_size=args.limit,
                                  page_token=args.page_token),
    )

    def show(console: Console) -> None:
        rows = [
            (_place(d), d.event_type, d.event_id, _origin(d), d.consumer_group,
             # The error's first line names its type (consumer.py writes "Type: message").
             (d.error.splitlines() or [d.error_type])[0][:_ERROR_WIDTH],
             render.when(d.fail_time), _header_lines(d), _replayed(d))
            for d in reply.dead_letters
        ]
        console.print(render.table(
            f"dead letters of {args.topic} (service {service})",
            ["dead letter", "event type", "event id", "from", "group", "error", "failed",
             "headers", "replayed"],
            rows,
        ))
        if reply.next_page_token:
            console.print(f"more: --page-token {reply.next_page_token}")

    return Result(reply, show)


def _decoded(dead: pb.DeadLetter) -> str:
    """The payload as text when idcctl knows its event type, else hex."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(dead.event_type)
        message: Any = message_factory.GetMessageClass(descriptor)()
        message.ParseFromString(dead.value)
        return text_format.MessageToString(message) or "(empty message)"
    except Exception:
        return dead.value.hex()


def dlq_show(ctx: Context, args: argparse.Namespace) -> Result:
    service = service_for(args)
    partition, offset = args.place
    dead = ctx.api.call(
        service, ctx.api.event_admin(service).GetDeadLetter,
        pb.GetDeadLetterRequest(topic=args.topic, partition=partition, offset=offset),
    ).dead_letter

    def show(console: Console) -> None:
        console.print(render.key_values(f"dead letter {args.topic}.dlq {_place(dead)}", [
            ("event type", dead.event_type), ("event id", dead.event_id),
            ("key", dead.key.decode("utf-8", "replace")), ("from", _origin(dead)),
            ("consumer group", dead.consumer_group), ("failed", render.when(dead.fail_time)),
            ("error type", dead.error_type), ("replayed", _replayed(dead) or "never"),
        ]))
        console.print("\n[bold]error[/bold]")
        console.print(dead.error, markup=False, highlight=False)
        console.print("\n[bold]headers[/bold]")
        console.print(_header_lines(dead), markup=False, highlight=False)
        console.print(f"\n[bold]payload[/bold] ({dead.value_size} bytes)")
        console.print(_decoded(dead), markup=False, highlight=False)

    return Result(dead, show)


def dlq_replay(ctx: Context, args: argparse.Namespace) -> Result:
    service = service_for(args)
    partition, offset = args.place
    replay = ctx.api.call(
        service, ctx.api.event_admin(service).ReplayDeadLetter,
        pb.ReplayDeadLetterRequest(topic=args.topic, partition=partition, offset=offset),
    ).replay

    def show(console: Console) -> None:
        console.print(render.key_values(f"replayed through the {service} outbox", [
            ("dead letter", f"{args.topic}.dlq {partition}:{offset}"),
            ("to topic", replay.topic), ("event id", replay.event_id),
            ("replay id", replay.replay_id), ("by", replay.actor),
            ("at", render.when(replay.replay_time)),
        ]))

    return Result(replay, show)


def outbox_republish(ctx: Context, args: argparse.Namespace) -> Result:
    if args.event_id and (args.since or args.until):
        raise CliError("give --event-id or --since/--until, not both", ExitCode.USAGE)
    if not args.event_id and args.since is None:
        raise CliError("give --since (and optionally --until) or --event-id: which sent "
                       "outbox rows to send again", ExitCode.USAGE)
    if args.since and args.until and args.since >= args.until:
        raise CliError(f"--since {args.since.isoformat()} is not before --until "
                       f"{args.until.isoformat()}", ExitCode.USAGE)
    service = args.target_service = args.service
    request = pb.RepublishOutboxRequest(event_id=args.event_id or "")
    if args.since:
        request.since.CopyFrom(timestamp(args.since))
    if args.until:
        request.until.CopyFrom(timestamp(args.until))
    reply = ctx.api.call(service, ctx.api.event_admin(service).RepublishOutbox, request)

    def show(console: Console) -> None:
        console.print(f"{reply.republished_count} outbox row(s) of the {service} service "
                      "will be published again by its relay")
        for event_id in reply.event_ids:
            console.print(event_id)

    return Result(reply, show)


def add_commands(b: Any, ops: Any) -> None:
    """``ops dlq list|show|replay`` and ``ops outbox republish`` (``b``: main._Builder)."""

    def service_option(parser: argparse.ArgumentParser, required: bool = False) -> None:
        parser.add_argument(
            "--service", choices=SERVICES, required=required,
            help="whose EventAdminService (and outbox) to use"
            + ("" if required else "; default: the topic's producer"),
        )

    dlq = b.group(ops, "dlq", "dead letters of a topic (admin token)")
    p = b.leaf(dlq, "list", dlq_list, "each dead letter with its error and headers")
    p.add_argument("topic", help="the topic, e.g. idc.order.events")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--page-token", default="", help="from the previous page")
    service_option(p)
    for name, handler, text in (
        ("show", dlq_show, "one dead letter in full, with its payload"),
        ("replay", dlq_replay, "send a dead letter again into its topic, through an outbox"),
    ):
        p = b.leaf(dlq, name, handler, text)
        p.add_argument("topic", help="the topic, e.g. idc.order.events")
        p.add_argument("place", type=dead_letter_place, metavar="PARTITION:OFFSET",
                       help="where the dead letter is in <topic>.dlq (see `ops dlq list`)")
        service_option(p)
    outbox = b.group(ops, "outbox", "a service's transactional outbox (admin token)")
    p = b.leaf(
        outbox, "republish", outbox_republish, "send outbox rows already sent again",
        "Send again the outbox rows a broker lost: those sent in --since/--until, or one\n"
        "--event-id. Consumers skip the events they had (their inbox).",
    )
    p.add_argument("--since", type=moment, help="rows sent at or after (ISO time or 2h, 1d)")
    p.add_argument("--until", type=moment, help="rows sent before (default: now)")
    p.add_argument("--event-id", help="only this outbox row")
    service_option(p, required=True)
