"""Who may read an order's personal data (its contacts), and what leaves the order database.

Contacts are shown to the customer's own tenant and to the ops of the telco that bills that
tenant (the billing entity's telco, services/billing/data/billing_entities.toml), to nobody
else: not the other telco's ops (their router carries the circuit, not the customer
relationship), not billing admins (invoices go to the billing directory's legal address,
not to order contacts), not admins. They read the order with its contacts left empty.

Events and routers carry no free text of the customer's: the description they get is built
from ids (services.common.limits.identifier_description).
"""

from __future__ import annotations

from services.common.auth import Principal, Role


def may_see_contacts(principal: Principal, tenant_id: str, billing_telco: str | None) -> bool:
    if principal.role is Role.CUSTOMER:
        return principal.tenant == tenant_id
    if principal.role is Role.OPS:
        return billing_telco is not None and principal.telco == billing_telco
    return False
