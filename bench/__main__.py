"""``python -m bench [--quick] [--rounds N] [--circuits N] [--scale channel] [--only WORKLOAD
...]``: run the workloads on a devstack of their own, write bench/results.json and print the
table."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench import billing, ingest, order, provisioning, scale_provisioning
from bench.harness import Results, format_row, markdown_table
from bench.scale import PARTS, SIZES, run_listing
from devstack.kafka import start_broker
from devstack.netconf import start_routers
from devstack.stack import EDGE_ROUTERS

WORKLOADS = ("order", "provisioning", "ingest", "billing", "scale")
DEFAULT_RESULTS = Path(__file__).parent / "results.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 3 minutes)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds per workload (tests)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds of product and floor, alternately, per order and "
                             "provisioning figure (3 by default, 2 with --quick or --tiny)")
    parser.add_argument("--circuits", type=int, default=0,
                        help="circuits of the billing run (1,000 by default, 50 with --quick)")
    parser.add_argument("--catchup-circuits", type=int, default=0,
                        help="circuits of the ingest catch-up, a day at both ends (500 by "
                             "default, 20 with --quick; 26000: the full 15 million samples)")
    parser.add_argument("--ingest-processes", type=int, default=1,
                        help="ingest processes sharing the usage topic's partitions (1)")
    parser.add_argument("--scale", choices=sorted(SIZES), default=None,
                        help="sizes of the scale rows: bench (400 circuits, the default of a "
                             "full run; --quick and --tiny leave the rows out unless given) "
                             "or channel (26,000 circuits)")
    parser.add_argument("--scale-circuits", type=int, default=0,
                        help="circuits of the scale listing and provisioning rows instead of "
                             "the --scale size")
    parser.add_argument("--scale-billing-circuits", type=int, default=0,
                        help="circuits of the scale billing row (both ends) instead of the "
                             "--scale size")
    parser.add_argument("--scale-parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="which scale rows to run (all)")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 0:
        parser.error("--rounds: 1 or more (0: the default of the scale)")
    if args.only is None:
        # The scale rows take minutes even at their bench size: not in the quick runs.
        skip = (args.quick or args.tiny) and args.scale is None and not args.scale_circuits
        args.only = [w for w in WORKLOADS if not (skip and w == "scale")]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    rounds = args.rounds or {"tiny": 2, "quick": 2, "full": 3}[scale]
    results = Results(config={"scale": scale, "workloads": args.only, "rounds": rounds})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="idc-bench-") as tmp:
        workdir = Path(tmp)
        with start_broker(workdir / "kafka") as broker:
            if "order" in args.only:
                # Per round. The composite floor's creates land in the product's database
                # too: the full run's 150 x 3 concurrencies x 3 rounds x 2 of 10 Mbps fit
                # the catalogue ports the workload uses (3,000 orders).
                calls = {"tiny": 20, "quick": 50, "full": 150}[scale]
                concurrencies = (1, 16) if scale == "tiny" else (1, 16, 64)
                results.config["order_calls_per_level"] = calls
                order.run(results, workdir, broker.bootstrap, concurrencies, calls, rounds)
            if "provisioning" in args.only:
                # (runs, batch) per round with an empty router, then with a preload: a
                # commit costs about 1 s with 2,000 circuits on the router, so fewer there.
                plan = {"tiny": [(0, 1, 3)], "quick": [(0, 3, 10), (200, 2, 5)],
                        "full": [(0, 20, 200), (2_000, 4, 40)]}[scale]
                results.config["provisioning"] = [
                    {"preload": p, "runs": r, "batch": b} for p, r, b in plan]
                with start_routers(list(EDGE_ROUTERS), workdir / "routers") as fleet:
                    provisioning.run(results, workdir, broker.bootstrap, fleet, plan, rounds)
            if "ingest" in args.only:
                samples = {"tiny": 1_000, "quick": 3_000, "full": 20_000}[scale]
                day = args.catchup_circuits or {"tiny": 3, "quick": 20, "full": 500}[scale]
                results.config["ingest_samples"] = samples
                results.config["catchup_circuits"] = day
                results.config["ingest_processes"] = args.ingest_processes
                ingest.run(results, workdir, broker.bootstrap, samples, day,
                           args.ingest_processes)
            if "billing" in args.only:
                circuits = args.circuits or {"tiny": 5, "quick": 50, "full": 1_000}[scale]
                results.config["billing_circuits"] = circuits
                billing.run(results, workdir, broker.bootstrap, circuits)
            if "scale" in args.only:
                sizes = replace(
                    SIZES[args.scale or "bench"], parts=tuple(args.scale_parts),
                    **({"circuits": args.scale_circuits} if args.scale_circuits else {}),
                    **({"billing": args.scale_billing_circuits}
                       if args.scale_billing_circuits else {}))
                results.config["scale_rows"] = {"size": args.scale or "bench", **asdict(sizes)}
                if "listing" in sizes.parts:
                    run_listing(results, workdir, broker.bootstrap, sizes)
                if "provisioning" in sizes.parts:
                    scale_provisioning.run(results, workdir, broker.bootstrap, sizes)
                if "billing" in sizes.parts:
                    billing.run(results, workdir, broker.bootstrap, sizes.billing, both_ends=True)
    results.config["seconds"] = round(time.monotonic() - started, 1)
    results.write(args.out)
    print()
    print(markdown_table(results.rows))
    failed = [r for r in results.rows if r.met is False]
    print(f"\n{len(results.rows)} figures, {len(failed)} target(s) not met or too noisy to "
          f"judge, {results.config['seconds']} s; results in {args.out}")
    for row in failed:
        print(f"  {row.verdict}: " + format_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
