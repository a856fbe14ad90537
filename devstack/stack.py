"""The whole devstack: one Kafka-compatible broker and the edge routers of both telcos.

Used by ``make run`` and by the pytest fixtures, so both talk to the same kind of peers.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.kafka import Broker, start_broker
from devstack.netconf import RouterFleet, RouterSpec, start_routers
from devstack.process import Peer

# One edge router per telco: the Singapore telco's speaks OpenConfig, the Chongqing telco's
# its vendor-native model. And the sandbox routers of the catalogue's sandbox sites
# (README "Sandbox"): the same netconfd with the same YANG, for sandbox circuits only.
EDGE_ROUTERS = (
    RouterSpec(name="sg-edge-1", platform="openconfig", telco="sg"),
    RouterSpec(name="cq-edge-1", platform="cq-vendor", telco="cq"),
)
SANDBOX_ROUTERS = (
    RouterSpec(name="sg-sandbox-edge", platform="openconfig", telco="sg", sandbox=True),
    RouterSpec(name="cq-sandbox-edge", platform="cq-vendor", telco="cq", sandbox=True),
)
DEFAULT_ROUTERS = EDGE_ROUTERS + SANDBOX_ROUTERS


@dataclass
class Devstack(Peer):
    broker: Broker
    routers: RouterFleet
    workdir: Path
    _exits: ExitStack

    def describe(self) -> dict[str, Any]:
        """Addresses of every peer, as written to ``devstack.json`` for other processes."""
        return {
            "kafka_bootstrap": self.broker.bootstrap,
            "routers": [
                {
                    "name": router.name,
                    "telco": router.telco,
                    "platform": router.platform,
                    "host": router.host,
                    "port": router.port,
                    "username": router.username,
                    "key_path": str(router.key_path),
                    "known_hosts_path": str(router.known_hosts_path),
                    "sandbox": router.sandbox,
                }
                for router in self.routers
            ],
        }

    def write_description(self, path: Path) -> None:
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")

    def close(self) -> None:
        self._exits.close()


def start_devstack(
    workdir: Path, routers: tuple[RouterSpec, ...] = DEFAULT_ROUTERS
) -> Devstack:
    """Start the broker (unless IDC_KAFKA_BOOTSTRAP names one) and the routers."""
    workdir.mkdir(parents=True, exist_ok=True)
    exits = ExitStack()
    try:
        broker = exits.enter_context(start_broker(workdir / "kafka"))
        fleet = exits.enter_context(start_routers(list(routers), workdir / "routers"))
    except BaseException:
        exits.close()
        raise
    return Devstack(broker=broker, routers=fleet, workdir=workdir, _exits=exits)
