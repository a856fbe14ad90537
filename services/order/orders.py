"""The order service's use cases, wired to one unit of work: what the servicers, the
workers and the tests call.

Each group of use cases runs one transaction per call around the decisions of
services.order.domain: placing (quotes, NEW orders), changing (bandwidth changes,
disconnects, cancellation), approving (the telcos' decisions, expiry) and outcomes
(provisioning's plans, progress and outcomes). Each writes its rows, the audit entries and
the outbox events in the same transaction, and watchers are told after it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from idc.order.v1 import order_pb2
from services.common.auth import Principal
from services.order import store
from services.order.approving import Approving
from services.order.changing import Changing
from services.order.context import OrderContext, now
from services.order.disclosure import ContactVault
from services.order.domain.catalogue import Catalogue
from services.order.domain.pricing import PriceBook
from services.order.domain.schedule import Interval, check_timeline, timeline
from services.order.outcomes import ProvisioningOutcomes
from services.order.placing import Placing
from services.order.settings import OrderSettings
from services.order.unit_of_work import UnitOfWork


class OrderApp:
    def __init__(self, uow: UnitOfWork, catalogue: Catalogue, price_book: PriceBook,
                 settings: OrderSettings, clock: Callable[[], datetime] = now, *,
                 contacts: ContactVault) -> None:
        self.context = OrderContext(uow, catalogue, price_book, settings, contacts, clock)
        self.uow, self.catalogue, self.clock, self.contacts = uow, catalogue, clock, contacts
        self.placing = Placing(self.context)
        self.changing = Changing(self.context)
        self.approving = Approving(self.context)
        self.outcomes = ProvisioningOutcomes(self.context)

    def capacity(self) -> store.CapacityFigures:
        with self.uow.read() as session:
            return self.context.capacity(session)

    def capacity_timeline(self, port_ids: Sequence[str], start: datetime | None,
                          end: datetime, sandbox: bool) -> list[Interval]:
        """Free bandwidth over [start (now when None), end) of the channel (the sandbox pool
        when ``sandbox``) and ``port_ids``."""
        moment = self.clock()
        start = check_timeline(start, end, moment)
        with self.uow.read() as session:
            channels, ports = store.bandwidth(session, self.catalogue,
                                              self.context.settings.channel_capacity_mbps)
            held = store.reservations(session, self.catalogue, moment, sandbox)
        return timeline(channels.of(sandbox), {p: ports[p] for p in port_ids}, held, start,
                        end)

    def reveal(self, principal: Principal, *orders: order_pb2.Order) -> None:
        """Fill in the contacts of those ``orders`` that ``principal`` may read them on."""
        with self.uow.read_one_statement() as session:
            self.contacts.reveal(session, principal, orders)
