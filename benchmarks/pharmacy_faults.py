"""Pharmacy fault benchmark: the issue's fault test at full size.

    .venv/bin/python -m benchmarks.pharmacy_faults [--orders 2000] [--workers 4] [--kills 5]

Paid prescription orders (one item each; `--refused` of them over the pharmacy's quantity
limit) are delivered by `portal pharmacy drain` processes while the reference pharmacy answers
30 % 5xx and lets 10 % of requests time out (half of them after accepting the Bundle); one drain
process is SIGKILLed `--kills` times and replaced. At the end every order must be accepted
exactly once at the pharmacy (its de-duplicated count equals the orders it accepts), none lost,
none pending, dead letters only for the refused ones. A markdown summary goes to stdout; the
raw results to benchmarks/results/pharmacy-faults-<date>.json. Fresh embedded PostgreSQL in a
temporary directory (or BENCH_DATABASE_URL), everything on loopback, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    install_signal_handlers,
    log,
    migrate,
    results_header,
    start_database,
    write_results,
)
from tests.fixtures.pharmacy import run_reference_pharmacy
from tests.fixtures.pharmacy_faults import (
    PHARMACY_LIMIT,
    drain_env,
    drain_with_kills,
    outcome,
    seed_paid_orders,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pharmacy_faults", description=__doc__
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--refused", type=int, default=20, help="orders the pharmacy refuses")
    parser.add_argument("--workers", type=int, default=4, help="concurrent drain processes")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--error-rate", type=float, default=0.3)
    parser.add_argument("--timeout-rate", type=float, default=0.1)
    parser.add_argument("--connector-timeout", type=float, default=0.5, help="seconds")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds for the drain")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    results = results_header("pharmacy-faults", args)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pharmacy-")))
    db = start_database(stack, workdir)
    migrate(db.owner)
    pharmacy = stack.enter_context(
        run_reference_pharmacy(workdir / "pharmacy.log", "--seed", str(args.seed))
    )
    pharmacy.settings(max_quantity=PHARMACY_LIMIT)
    log(f"seeding {args.orders} paid prescription orders")
    began = time.monotonic()
    seeded = seed_paid_orders(
        db.app,
        pharmacy.base_url,
        orders=args.orders,
        refused=args.refused,
        timeout_seconds=args.connector_timeout,
    )
    results["seeding_seconds"] = round(time.monotonic() - began, 1)
    pharmacy.faults(error_rate=args.error_rate, timeout_rate=args.timeout_rate, timeout_seconds=2.0)
    log(f"draining with {args.workers} processes, {args.kills} kills")
    drained = drain_with_kills(
        drain_env(db.app, db.owner),
        db.owner,
        workers=args.workers,
        kills=args.kills,
        kill_every=(3.0, 15.0),
        deadline_seconds=args.deadline,
        seed=args.seed,
        log_path=workdir / "drain.log",
    )
    pharmacy.faults(error_rate=0, timeout_rate=0)
    found = outcome(db.owner, seeded.order_ids)
    stats = pharmacy.stats()
    expected = args.orders - args.refused
    refused_ok = sorted(o for o, _ in found["dead_letters"]) == sorted(seeded.refused_order_ids)
    results.update(
        drain_seconds=drained.seconds,
        drain_processes_started=drained.started,
        kills=drained.killed,
        outcome=found,
        pharmacy=stats,
        checks={
            "accepted_exactly_once": stats["distinct_requests"] == expected
            and found["statuses"].get("accepted", 0) == expected,
            "none_lost": found["submissions"] == args.orders,
            "none_stuck": not {"pending", "sending"} & set(found["statuses"]),
            "dead_letters_only_refused": refused_ok,
        },
    )
    results["outcome"]["dead_letters"] = len(found["dead_letters"])
    return results


def markdown(results: dict[str, Any]) -> str:
    p = results["parameters"]
    o = results["outcome"]
    s = results["pharmacy"]
    checks = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in results["checks"].items())
    return "\n".join(
        [
            f"## Pharmacy fault benchmark, {results['started_at']}",
            "",
            f"{p['orders']} paid prescription orders ({p['refused']} over the pharmacy's limit),"
            f" {p['error_rate']:.0%} 5xx and {p['timeout_rate']:.0%} timeouts at the reference"
            f" pharmacy, {p['workers']} drain processes, {results['kills']} killed and replaced.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| delivered (accepted at the pharmacy) | {o['statuses'].get('accepted', 0)} |",
            f"| pharmacy's de-duplicated count | {s['distinct_requests']} |",
            f"| re-sends the pharmacy recognised | {s['duplicates']} |",
            f"| retries (sends beyond the first) | {o['retries']} |",
            f"| dead-lettered | {o['dead_letters']} |",
            f"| injected 5xx / timeouts | {s['faults_5xx']} / {s['faults_timeout']} |",
            f"| exchanges logged | {o['exchanges_logged']} |",
            f"| payment -> acceptance p50 / p99 / max | {o['delay_p50_s']} s / {o['delay_p99_s']}"
            f" s / {o['delay_max_s']:.1f} s |",
            f"| seeding / drain time | {results['seeding_seconds']} s"
            f" / {results['drain_seconds']} s |",
            "",
            f"Checks: {checks}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    with contextlib.ExitStack() as stack:
        results = run(args, stack)
    path = write_results("pharmacy-faults", results, args.output)
    print(markdown(results))
    log(f"raw results: {path}")
    return 0 if all(results["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
