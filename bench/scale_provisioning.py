"""Channel-scale provisioning (issue 18 part 3): circuits approved in batches onto the
routers (bench.scale.ROUTERS_PER_SIDE pairs of real netconfd routers, the circuits spread
over them) until they hold every circuit, then single circuits approved one after another
on the full routers.

Floor: the one-circuit-per-transaction commit of bench.provisioning (raw ncclient on
sg-edge-1 and cq-edge-1, on an interface of its own), measured at a few fill levels as the
routers' datastores grow: its time is the router's commit time at that size, and the
floor's rate there one circuit per transaction time. The whole run's floor is the time one
transaction per circuit would have taken, each batch at the transaction time measured at
the last fill level before it.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import Results, Row, at_least, judged, memory_row, nearest_rank
from bench.provisioning import FLOOR_IF, Product, Routers, circuit, provisioning_service
from bench.scale import ROUTERS_PER_SIDE, VLAN_FIRST, VLAN_LAST, ScaleSizes
from bench.stack import postgres_database
from devstack.netconf import RouterSpec, start_routers
from idc.events.v1 import common_pb2
from services.provisioning.domain.circuits import Operation

FLOOR_RUNS = 3
VLANS = VLAN_LAST - VLAN_FIRST + 1


def specs() -> list[RouterSpec]:
    return [RouterSpec(name=f"{telco}-edge-{n}", platform=platform, telco=telco)
            for n in range(1, ROUTERS_PER_SIDE + 1)
            for telco, platform in (("sg", "openconfig"), ("cq", "cq-vendor"))]


def scale_circuit(index: int) -> common_pb2.CircuitParameters:
    """Circuit ``index`` of the run: router pair index mod ROUTERS_PER_SIDE, then an
    interface of its own per 3,900 VLANs (interfaces the floor does not use)."""
    pair, slot = index % ROUTERS_PER_SIDE + 1, index // ROUTERS_PER_SIDE
    unit, vlan = 10 + slot // VLANS, VLAN_FIRST + slot % VLANS
    params = circuit(vlan, {"sg": f"xe-0/0/{unit}", "cq": f"GigabitEthernet0/0/{unit}"})
    params.circuit_id = f"CKT-SCALE-{index:05d}"
    for end, telco in ((params.a_end, "sg"), (params.z_end, "cq")):
        end.router_name = f"{telco}-edge-{pair}"
    return params


def _fill(done: int) -> str:
    return f"{done} on the routers ({done // ROUTERS_PER_SIDE} each)"


def floor_transaction_ms(routers: Routers, first_vlan: int) -> list[float]:
    """FLOOR_RUNS circuits one transaction each on sg-edge-1 and cq-edge-1, then removed."""
    done, latencies = [], []
    for vlan in range(first_vlan, first_vlan + FLOOR_RUNS):
        params = circuit(vlan, FLOOR_IF)
        started = time.perf_counter()
        routers.transaction(params)
        latencies.append((time.perf_counter() - started) * 1000)
        done.append(params)
    routers.apply(Operation.DELETE, done)
    return latencies


def run(results: Results, workdir: Path, bootstrap: str, sizes: ScaleSizes) -> None:
    total, batch = sizes.circuits, sizes.batch
    batches = -(-total // batch)
    # Fill levels (in batches done) where the floor is measured: empty, evenly, full.
    marks = {round(i * batches / sizes.checkpoints) for i in range(sizes.checkpoints + 1)}
    label = f"scale provisioning {total} circuits"
    with start_routers(specs(), workdir / "scale-routers") as fleet, \
            postgres_database("scale_provisioning") as url, \
            provisioning_service(workdir, bootstrap, fleet, url) as service:
        routers, product = Routers(fleet), Product(bootstrap)
        try:
            warm = circuit(VLAN_LAST, FLOOR_IF)  # sessions open on first use: untimed
            product.approve(warm)
            product.producer.flush()
            if product.wait_outcomes({warm.circuit_id}, timeout=120):
                raise RuntimeError("the first circuit failed: see provisioning.log")
            routers.apply(Operation.DELETE, [warm])
            floor_ms: dict[int, float] = {}
            product_s, floor_s, failed, done = 0.0, 0.0, 0, 0
            for number in range(batches):
                if number in marks:
                    floor_ms[done] = nearest_rank(
                        floor_transaction_ms(routers, VLAN_FIRST), 50)
                ids = [scale_circuit(i) for i in range(done, min(done + batch, total))]
                started = time.perf_counter()
                for params in ids:
                    product.approve(params)
                product.producer.flush()
                lost = product.wait_outcomes({p.circuit_id for p in ids},
                                             timeout=max(300.0, len(ids) * 3.0))
                elapsed = time.perf_counter() - started
                product_s += elapsed
                floor_s += len(ids) * floor_ms[max(floor_ms)] / 1000
                failed += len(lost)
                if number in marks:
                    results.add(judged(Row(
                        f"{label}, batch of {len(ids)} at {_fill(done)}", "throughput",
                        "circuits/s", (len(ids) - len(lost)) / elapsed,
                        1000 / floor_ms[done]), at_least(1.0), ">= floor (1 per transaction)"))
                done += len(ids)
            full = floor_transaction_ms(routers, VLAN_FIRST)
            floor_ms[done] = nearest_rank(full, 50)
            for level, ms in sorted(floor_ms.items()):
                results.add(Row(f"{label}, one transaction at {_fill(level)}",
                                "router commit (floor transaction) p50", "ms", ms))
            results.add(judged(Row(f"{label}, all in batches of {batch}", "throughput",
                                   "circuits/s", (total - failed) / product_s,
                                   total / floor_s), at_least(1.0),
                               ">= floor (1 per transaction)"))
            latencies = []
            for index in range(total, total + sizes.singles):
                took = product.approve_to_active_ms(scale_circuit(index), timeout=300)
                if took is None:
                    failed += 1
                    continue
                latencies.append(took)
            single = f"{label}, routers full, 1 circuit x{sizes.singles}"
            for percent in (50, 99):
                results.add(Row(single, f"approve-to-active p{percent}", "ms",
                                nearest_rank(latencies, percent), nearest_rank(full, percent)))
            results.add(Row(f"{label}, all circuits", "ProvisioningFailed", "circuits",
                            failed, target="0", met=failed == 0))
        finally:
            product.close()
            routers.close()
        results.add(memory_row(label, service))
