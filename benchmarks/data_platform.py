"""Data platform benchmark: the portal's data platform on a database of 1M orders.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m benchmarks.data_platform
    .venv/bin/python -m benchmarks.data_platform --orders 100000 --skip stack

One run, on one PostgreSQL server (a fresh embedded one, or BENCH_DATABASE_URL's):

1. **Baseline**: pgbench TPC-B-like (`-s 10 -c 8 -j 2`) in a database of its own, dropped after.
2. **Seed**: `devtools.scale.seed_history` (what `portal seed scale --orders N` runs) loads the
   order history with COPY; then VACUUM ANALYZE, then every invariant of `devtools.scale`.
3. **dbt build**, full (`pipelines.dbt_project.run_dbt(["build", "--full-refresh"])`): every
   model and test from scratch.
4. **1,000 new orders** through the portal's own flow (`app.orders.flows.place_order`, one
   transaction each, as the API does), some of them paid at localstripe through the payment
   service and the webhook's code path (`app.payments.flows.apply_event`); a few of those
   events are deliberately not applied (missed webhooks).
5. **dbt incremental**: `dbt run` (the incremental models pick up what changed), then
   `dbt build` (the same plus every test).
6. **Reconciliation** (`app.payments.reconciliation.reconcile`) of the period of the new
   payments against localstripe: it lists what localstripe holds, compares it with the 1M-order
   database and repairs the missed webhooks; run twice (the second finds nothing new). And the
   portal-side of reconciling a whole month of the seeded history: the repository query and the
   comparison for that month's payments, given Stripe's side as it would be listed (the seeded
   PaymentIntents do not exist at any Stripe; the listing itself is not measured).
7. **Lake export**: every mart of the `analytics` schema to Parquet
   (`pipelines.lake.export.export_mart`), dated marts month by month.
8. **The `make run` stack** (`portal up` on free ports, against this database): time until every
   URL answers, and the resident memory of every process of the stack (and PostgreSQL's).

A phase whose code is not on this branch (dbt, reconciliation, lake, Dagster) is reported as
not measured, with the reason. Raw results go to benchmarks/results/data_platform-<date>.json,
a markdown summary to stdout. Targets (reported, not asserted): seed of 1M orders < 300 s, full
dbt build <= 120 s, incremental <= 15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from benchmarks.harness import (
    CpuMeter,
    Database,
    admin_execute,
    baseline,
    free_port,
    install_signal_handlers,
    log,
    ratio,
    results_header,
    server_facts,
    start_database,
    write_results,
)

TARGETS = {"seed_seconds": 300.0, "dbt_full_seconds": 120.0, "dbt_incremental_seconds": 15.0}


def _available(module: str) -> str | None:
    """None when `module` imports, else why not (the phase is then not measured)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} is not on this branch ({exc})"
    return None


def _phase(results: dict[str, Any], name: str, action: Callable[[], Any]) -> None:
    """Run one phase; a failure is recorded (type and the first line of its message) and the
    run goes on with the next phase."""
    try:
        results[name] = action()
    except Exception as exc:  # reported in the results, not hidden
        message = str(exc).splitlines()[0][:300] if str(exc) else ""
        log(f"  {name} FAILED: {type(exc).__name__}: {message}")
        results.setdefault("failed", {})[name] = f"{type(exc).__name__}: {message}"


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def migrate_all_heads(owner_url: str) -> None:
    """Every head: the branches of this issue each add a migration after 0010 until they are
    chained on merge."""
    from alembic import command

    from app.migrations import alembic_config

    command.upgrade(alembic_config(owner_url), "heads")


# -- seed ---------------------------------------------------------------------------------------


def seed(db: Database, *, orders: int, products: int, seed_value: int) -> dict[str, Any]:
    from devtools.scale import check_invariants, seed_history

    log(f"seed_history: {orders:,} orders, {products:,} products")
    meter = CpuMeter({"seed": os.getpid(), "postgres": db.postmaster_pid})
    meter.start()
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        log(f"  {done:,} orders")

    result = seed_history(
        db.owner, orders=orders, products=products, seed=seed_value, progress=progress
    )
    cpu = meter.stop(result.seconds)
    log(
        f"  {result.total_rows:,} rows in {result.seconds:.1f} s"
        f" = {result.rows_per_second:,.0f} rows/s"
    )
    _, vacuum = _timed(lambda: admin_execute(db.owner, "VACUUM ANALYZE"))
    invariants, checking = _timed(lambda: check_invariants(db.owner))
    broken = {name: n for name, n in invariants.items() if n}
    log(f"  VACUUM ANALYZE {vacuum:.1f} s; invariants {broken or 'hold'} ({checking:.1f} s)")
    with psycopg.connect(db.owner) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {
        "orders": orders,
        "rows": result.rows,
        "total_rows": result.total_rows,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.rows_per_second),
        "orders_per_s": round(orders / result.seconds) if result.seconds else None,
        "foreign_keys": result.foreign_keys,
        "cpu_cores_used": cpu,
        "vacuum_analyze_seconds": round(vacuum, 2),
        "invariants_seconds": round(checking, 2),
        "invariants_broken": broken,
        "database_mb": round(int(size[0]) / 2**20) if size else None,  # type: ignore[call-overload]
    }


# -- dbt ----------------------------------------------------------------------------------------


def dbt(db: Database, args: list[str]) -> dict[str, Any]:
    from pipelines.dbt_project import run_dbt

    log(f"dbt {' '.join(args)}")
    done, seconds = _timed(lambda: run_dbt(args, db.owner))
    lines = (done.stdout or "").strip().splitlines()
    slowest: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        from pipelines.dbt_project import DBT_PROJECT_DIR

        run_results = json.loads((DBT_PROJECT_DIR / "target" / "run_results.json").read_text())
        slowest = [
            {"node": r["unique_id"], "seconds": round(r["execution_time"], 2)}
            for r in sorted(run_results["results"], key=lambda r: -r["execution_time"])[:8]
        ]
    summary = next((line for line in reversed(lines) if "PASS=" in line or "Done." in line), "")
    log(f"  {seconds:.1f} s, exit {done.returncode}: {summary.strip()}")
    return {
        "args": args,
        "seconds": round(seconds, 2),
        "returncode": done.returncode,
        "summary": summary.strip(),
        "tail": lines[-15:] if done.returncode else lines[-3:],
        "slowest_nodes": slowest,
    }


# -- new orders, paid at localstripe -------------------------------------------------------------


def start_localstripe(stack: contextlib.ExitStack, workdir: Path) -> str:
    from devtools.devstack import Supervisor, stripe_stand_in_argv

    supervisor = Supervisor(log_dir=workdir / "logs")
    stack.callback(supervisor.stop)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log(f"starting localstripe ({base})")
    supervisor.start("stripe", stripe_stand_in_argv(port))
    supervisor.wait_http("stripe", base + "/js.stripe.com/v3/")
    return base


def new_orders(
    db: Database, *, count: int, paid: int, missed: int, stripe_base: str | None, seed_value: int
) -> dict[str, Any]:
    """`count` orders placed by doctors through `place_order` (one transaction each); `paid` of
    them paid at localstripe (intent created by the payment service, confirmed at Stripe, the
    `payment_intent.succeeded` event applied through the webhook's path) except `missed`."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from app.actor import Actor, Role
    from app.db import make_engine
    from app.errors import PortalError
    from app.models import Lot, Patient, User
    from app.orders import flows as order_flows
    from app.orders.schemas import OrderCreate, OrderLine

    rng = random.Random(seed_value)
    engine = make_engine(db.app, pool_size=1)
    started_at = datetime.now(UTC)
    placed: list[uuid.UUID] = []
    refused = 0
    with Session(engine) as session:
        doctors = session.execute(
            select(Patient.id, User.id, User.oidc_subject, User.email)
            .join(User, User.id == Patient.doctor_id)
            .order_by(Patient.id)
            .limit(500)
        ).all()
        sellable = sorted(
            set(
                session.scalars(
                    select(Lot.product_id).where(
                        Lot.status == "available",
                        Lot.quantity_on_hand - Lot.quantity_reserved >= 10,
                        (Lot.expiration_date.is_(None))
                        | (Lot.expiration_date > started_at.date() + timedelta(days=30)),
                    )
                )
            )
        )
        session.rollback()
        log(f"placing {count:,} orders ({len(sellable):,} products in stock)")

        def place() -> None:
            nonlocal refused
            for _ in range(count):
                patient_id, doctor_id, subject, email = rng.choice(doctors)
                actor = Actor(
                    subject=subject or email, role=Role.DOCTOR, user_id=doctor_id, email=email
                )
                lines = [
                    OrderLine(product_id=p, quantity=rng.randint(1, 2))
                    for p in rng.sample(sellable, rng.choice((1, 1, 2)))
                ]
                try:
                    result = order_flows.place_order(
                        session, actor, OrderCreate(patient_id=patient_id, items=lines)
                    )
                    session.commit()
                    placed.append(result.order.id)
                except PortalError:
                    session.rollback()
                    refused += 1

        _, placing = _timed(place)
    log(f"  {len(placed):,} placed in {placing:.1f} s ({refused} refused)")
    out: dict[str, Any] = {
        "placed": len(placed),
        "refused": refused,
        "seconds": round(placing, 2),
        "orders_per_s": round(len(placed) / placing, 1) if placing else None,
        "started_at": started_at.isoformat(),
    }
    if stripe_base is not None:
        out["payments"] = _pay(engine, placed[:paid], missed=missed, stripe_base=stripe_base)
    engine.dispose()
    return out


def _pay(
    engine: Any, order_ids: list[uuid.UUID], *, missed: int, stripe_base: str
) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.config import get_settings
    from app.integrations.stripe.client import stripe_client
    from app.models import Order
    from app.payments import flows as payment_flows
    from app.payments import service as payments

    os.environ["STRIPE_API_BASE"] = stripe_base
    get_settings.cache_clear()
    stripe_client.cache_clear()
    log(f"paying {len(order_ids):,} orders at localstripe ({missed} events not applied)")
    applied = dropped = 0
    started = time.perf_counter()
    with Session(engine) as session, httpx.Client(base_url=stripe_base, timeout=30) as http:
        key = get_settings().stripe_api_key
        for n, order_id in enumerate(order_ids):
            order = session.get(Order, order_id)
            assert order is not None
            intent_id, _ = payments.create_or_reuse_intent(session, Actor.system("checkout"), order)
            session.commit()
            http.post(
                f"/v1/payment_intents/{intent_id}",
                data={"payment_method": "pm_card_visa"},
                auth=(key, ""),
            )
            confirmed = http.post(f"/v1/payment_intents/{intent_id}/confirm", auth=(key, ""))
            confirmed.raise_for_status()
            if n < missed:
                dropped += 1
                continue
            event = {
                "id": f"evt_bench_{uuid.uuid4().hex[:16]}",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {"object": confirmed.json()},
            }
            payment_flows.apply_event(session, event)
            session.commit()
            applied += 1
    seconds = time.perf_counter() - started
    log(f"  {applied} applied, {dropped} missed, {seconds:.1f} s")
    return {
        "paid_at_stripe": len(order_ids),
        "applied": applied,
        "missed": dropped,
        "seconds": round(seconds, 2),
    }


# -- reconciliation -----------------------------------------------------------------------------


def reconcile_new(db: Database, *, start: datetime, stripe_base: str) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.db import make_engine
    from app.integrations.stripe.client import stripe_client
    from app.payments.reconciliation import reconcile

    engine = make_engine(db.app, pool_size=1)
    runs = []
    try:
        for attempt in (1, 2):
            end = datetime.now(UTC) + timedelta(seconds=1)
            with Session(engine) as session:
                began = time.perf_counter()
                report = reconcile(
                    session, Actor.system("benchmark"), start=start, end=end, stripe=stripe_client()
                )
                session.commit()
                seconds = time.perf_counter() - began
            runs.append(
                {
                    "run": attempt,
                    "seconds": round(seconds, 2),
                    "intents_examined": report.intents_examined,
                    "counts": report.counts,
                    "new": report.new,
                    "repaired": report.repaired,
                    "open": report.open,
                }
            )
            log(f"  reconcile run {attempt}: {runs[-1]}")
    finally:
        engine.dispose()
    return {"period_start": start.isoformat(), "runs": runs}


def reconcile_month_portal_side(db: Database, *, batch: int | None = None) -> dict[str, Any]:
    """The portal's half of reconciling the busiest month of the seeded history: Stripe's side
    is built from the portal's own payments (what Stripe would list when all agree), then the
    repository reads the portal side for those intents and the service compares them: for the
    whole month at once as `reconcile` does, or in batches of `batch` intents."""
    from sqlalchemy.orm import Session

    from app.db import make_engine
    from app.integrations.stripe.listing import StripeState
    from app.payments import reconciliation_repository as repository
    from app.payments import reconciliation_service as service

    with psycopg.connect(db.owner) as conn:
        month = conn.execute(
            "SELECT date_trunc('month', created_at) FROM payments"
            " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        assert month is not None
        start = month[0]
        rows = conn.execute(
            """SELECT p.stripe_payment_intent_id, p.status, p.amount_cents, p.refunded_cents,
                      p.currency, p.order_id, p.disputed, extract(epoch FROM p.created_at)::bigint
               FROM payments p
               WHERE p.created_at >= %s AND p.created_at < %s + interval '1 month'""",
            (start, start),
        ).fetchall()
    intents = [
        {
            "id": pi,
            "object": "payment_intent",
            "status": status,
            "amount": amount,
            "amount_received": amount if status == "succeeded" else 0,
            "currency": currency,
            "created": created,
            "metadata": {"order_id": str(order_id)},
            "latest_charge": {
                "id": "ch_" + pi[3:],
                "amount_refunded": refunded,
                "disputed": disputed,
                "refunded": refunded == amount,
            }
            if status == "succeeded"
            else None,
        }
        for pi, status, amount, refunded, currency, order_id, disputed, created in rows
    ]
    size = batch or len(intents)
    chunks = [intents[i : i + size] for i in range(0, len(intents), size)]
    engine = make_engine(db.app, pool_size=1)
    reading = comparing = 0.0
    findings: list[Any] = []
    try:
        with Session(engine) as session:
            for chunk in chunks:
                state = StripeState(intents=chunk, disputes_listed=False)
                examined = {i["id"] for i in chunk}
                portal, seconds = _timed(
                    lambda: repository.portal_side(
                        session,
                        examined,  # noqa: B023 - called at once
                        service.order_ids_named(state),  # noqa: B023
                    )
                )
                reading += seconds
                found, seconds = _timed(lambda: service.compare(state, portal))  # noqa: B023
                comparing += seconds
                findings += found
            session.rollback()
    finally:
        engine.dispose()
    kinds: dict[str, int] = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    log(
        f"  month {start:%Y-%m}: {len(intents):,} intents;"
        f" portal side {reading:.2f} s, compare {comparing:.2f} s"
    )
    return {
        "month": f"{start:%Y-%m}",
        "intents": len(intents),
        "batches": len(chunks),
        "portal_side_seconds": round(reading, 2),
        "compare_seconds": round(comparing, 2),
        "findings": kinds,
        "note": "Stripe's listing of the month is not part of this number (see BENCHMARKS.md)",
    }


# -- lake ---------------------------------------------------------------------------------------


def lake_export(db: Database, workdir: Path) -> dict[str, Any]:
    from app.analytics.lake import Lake
    from pipelines.lake.export import export_mart

    lake = Lake.at(str(workdir / "lake"))
    with psycopg.connect(db.owner) as conn:
        marts = [
            (str(name), str(kind))
            for name, kind in conn.execute(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_schema = 'analytics' ORDER BY 1"
            ).fetchall()
        ]
    exported = []
    started = time.perf_counter()
    for mart, kind in marts:
        export, seconds = _timed(lambda m=mart: export_mart(db.owner, lake, m))  # type: ignore[misc]
        exported.append(
            {"mart": mart, "type": kind, "rows": export.rows, "seconds": round(seconds, 2)}
        )
    total = time.perf_counter() - started
    size = sum(f.stat().st_size for f in (workdir / "lake").rglob("*.parquet"))
    log(
        f"  lake: {len(exported)} marts, {sum(e['rows'] for e in exported):,} rows,"
        f" {total:.1f} s, {size / 2**20:.1f} MB"
    )
    return {
        "marts": exported,
        "seconds": round(total, 2),
        "rows": sum(e["rows"] for e in exported),
        "parquet_mb": round(size / 2**20, 1),
        "layout": "each mart whole into current/ (the export function's own unit of work)",
    }


# -- the make run stack -------------------------------------------------------------------------


def stack_startup(db: Database, workdir: Path, *, timeout: float) -> dict[str, Any]:
    """`portal up` on free ports against this database; time to every URL answering, and the
    RSS of every process it started (and of PostgreSQL, when embedded)."""
    from devtools.devstack import venv_binary

    ports = {name: free_port() for name in ("api", "oidc", "stripe", "smtp", "dagster")}
    env = {
        **os.environ,
        "DATABASE_URL": db.app,
        "DATABASE_MIGRATION_URL": db.owner,
        "DATA_DIR": str(workdir / "stack"),
        "API_PORT": str(ports["api"]),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['api']}",
        "OIDC_ISSUER": f"http://127.0.0.1:{ports['oidc']}",
        "STRIPE_API_BASE": f"http://127.0.0.1:{ports['stripe']}",
        "STRIPE_JS_URL": f"http://127.0.0.1:{ports['stripe']}/js.stripe.com/v3/",
        "SMTP_PORT": str(ports["smtp"]),
        "DAGSTER_PORT": str(ports["dagster"]),
        "ENVIRONMENT": "development",
    }
    urls = {
        "api": f"http://127.0.0.1:{ports['api']}/healthz",
        "identity-provider": f"http://127.0.0.1:{ports['oidc']}/.well-known/openid-configuration",
        "stripe": f"http://127.0.0.1:{ports['stripe']}/js.stripe.com/v3/",
        "dagster": f"http://127.0.0.1:{ports['dagster']}/server_info",
    }
    log_path = workdir / "portal-up.log"
    started = time.perf_counter()
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [venv_binary("portal"), "up"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    answered: dict[str, float] = {}
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            while (
                time.monotonic() < deadline and len(answered) < len(urls) and process.poll() is None
            ):
                for name, url in urls.items():
                    if name in answered:
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if http.get(url).status_code < 500:
                            answered[name] = round(time.perf_counter() - started, 2)
                time.sleep(0.25)
        time.sleep(5 if len(answered) == len(urls) else 0)  # settle before reading memory
        processes = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(process.pid)
            processes = [root, *root.children(recursive=True)]
        memory = []
        for p in processes:
            with contextlib.suppress(psutil.Error):
                memory.append(
                    {
                        "pid": p.pid,
                        "command": " ".join(p.cmdline()[1:4])[:120],
                        "rss_mb": round(p.memory_info().rss / 2**20, 1),
                    }
                )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    missing = sorted(set(urls) - set(answered))
    log(
        f"  stack: answered {answered}; not answering {missing};"
        f" RSS {sum(m['rss_mb'] for m in memory):.0f} MB"
    )
    return {
        "seconds_to_answer": answered,
        "all_answered_seconds": max(answered.values()) if not missing else None,
        "not_answering": missing,
        "processes": memory,
        "rss_mb_total": round(sum(m["rss_mb"] for m in memory), 1),
        "log_tail": log_path.read_text(errors="replace").splitlines()[-8:] if missing else [],
    }


# -- the run ------------------------------------------------------------------------------------


PHASES = ("seed", "dbt", "reconcile", "lake", "stack")


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    results = results_header("data_platform", args)
    results["not_measured"] = {}
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    db = start_database(stack, workdir)
    results["postgres"] = {"embedded": db.embedded, **server_facts(db.server)}
    results["pgbench"] = baseline(
        db, scale=10, clients=8, threads=2, seconds=args.pgbench_seconds, select_only=False
    )
    admin_execute(db.server, f"DROP DATABASE {db.pgbench_name}")
    log("applying the migrations")
    migrate_all_heads(db.owner)
    skip = set(args.skip)
    results["seed"] = seed(db, orders=args.orders, products=args.products, seed_value=args.seed)

    dbt_missing = _available("pipelines.dbt_project")
    if "dbt" in skip or dbt_missing:
        results["not_measured"]["dbt"] = dbt_missing or "skipped (--skip dbt)"
    else:
        _phase(results, "dbt_full", lambda: dbt(db, ["build", "--full-refresh"]))

    recon_missing = _available("app.payments.reconciliation")
    stripe_base = None
    if "reconcile" not in skip and not recon_missing:
        stripe_base = start_localstripe(stack, workdir)
    results["new_orders"] = new_orders(
        db,
        count=args.new_orders,
        paid=args.paid,
        missed=args.missed,
        stripe_base=stripe_base,
        seed_value=args.seed,
    )
    if "dbt_full" in results:
        _phase(results, "dbt_incremental_run", lambda: dbt(db, ["run"]))
        _phase(results, "dbt_incremental_build", lambda: dbt(db, ["build"]))

    if "reconcile" in skip or recon_missing:
        results["not_measured"]["reconcile"] = recon_missing or "skipped (--skip reconcile)"
    else:
        assert stripe_base is not None
        start = datetime.fromisoformat(results["new_orders"]["started_at"])
        _phase(
            results,
            "reconcile_new_payments",
            lambda: reconcile_new(db, start=start, stripe_base=stripe_base),
        )
        _phase(results, "reconcile_month_portal_side", lambda: reconcile_month_portal_side(db))
        _phase(
            results,
            "reconcile_month_portal_side_batched",
            lambda: reconcile_month_portal_side(db, batch=20_000),
        )

    lake_missing = _available("pipelines.lake.export")
    if "lake" in skip or lake_missing or "dbt_full" not in results:
        results["not_measured"]["lake"] = lake_missing or "skipped (--skip lake, or no marts built)"
    else:
        _phase(results, "lake", lambda: lake_export(db, workdir))

    if "stack" in skip:
        results["not_measured"]["stack"] = "skipped (--skip stack)"
    else:
        log("starting the make run stack (portal up)")
        _phase(results, "stack", lambda: stack_startup(db, workdir, timeout=args.stack_timeout))
        if "dagster" in results.get("stack", {}).get("not_answering", ["dagster"]):
            results["not_measured"]["dagster"] = "Dagster did not answer (see stack.log_tail)"

    tps = results["pgbench"]["tpcb"]["tps"]
    results["ratios"] = {
        "seed_rows_per_s_per_pgbench_tps": ratio(results["seed"]["rows_per_s"], tps),
    }
    results["targets"] = {
        "seed_seconds": {"target": TARGETS["seed_seconds"], "measured": results["seed"]["seconds"]},
        "dbt_full_seconds": {
            "target": TARGETS["dbt_full_seconds"],
            "measured": results.get("dbt_full", {}).get("seconds"),
        },
        "dbt_incremental_seconds": {
            "target": TARGETS["dbt_incremental_seconds"],
            "measured": results.get("dbt_incremental_run", {}).get("seconds"),
        },
    }
    results["ok"] = not results["seed"]["invariants_broken"]
    return results


def markdown(results: dict[str, Any]) -> str:
    m, pg, base = results["machine"], results["postgres"], results["pgbench"]
    s = results["seed"]
    out = [
        f"## Data platform at {s['orders']:,} orders ({results['started_at']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB; load average at start"
        f" {m['load_average_at_start']}. PostgreSQL: {pg['version'].split(' on ')[0]}"
        f" ({'embedded' if pg['embedded'] else 'BENCH_DATABASE_URL'}).",
        f"pgbench TPC-B-like -s 10 -c 8 -j 2: {base['tpcb']['tps']:,.0f} tps.",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        f"| seed ({s['total_rows']:,} rows) | {s['seconds']:.1f} s, {s['rows_per_s']:,} rows/s"
        f" ({s['foreign_keys']}) | < 300 s |",
        f"| VACUUM ANALYZE after the seed | {s['vacuum_analyze_seconds']:.1f} s | |",
    ]
    placed = results.get("new_orders", {}).get("placed", 0)
    for key, label, target in (
        ("dbt_full", "dbt build --full-refresh", "<= 120 s"),
        ("dbt_incremental_run", f"dbt run after {placed:,} new orders", "<= 15 s"),
        ("dbt_incremental_build", f"dbt build after {placed:,} new orders", ""),
    ):
        if key in results:
            r = results[key]
            out.append(f"| {label} | {r['seconds']:.1f} s (exit {r['returncode']}) | {target} |")
    if "reconcile_new_payments" in results:
        for r in results["reconcile_new_payments"]["runs"]:
            out.append(
                f"| reconcile run {r['run']} ({r['intents_examined']} intents at localstripe)"
                f" | {r['seconds']:.1f} s, {r['repaired']} repaired, {r['new']} new | |"
            )
    for key in ("reconcile_month_portal_side", "reconcile_month_portal_side_batched"):
        if key in results:
            mp = results[key]
            out.append(
                f"| reconcile {mp['month']}, portal side ({mp['intents']:,} intents,"
                f" {mp['batches']} batch(es)) |"
                f" {mp['portal_side_seconds'] + mp['compare_seconds']:.1f} s | |"
            )
    if "lake" in results:
        lk = results["lake"]
        out.append(
            f"| lake export ({lk['rows']:,} rows, {lk['parquet_mb']} MB)"
            f" | {lk['seconds']:.1f} s | |"
        )
    if "stack" in results:
        st = results["stack"]
        out.append(
            f"| make run stack: all URLs answering | {st['all_answered_seconds']} s"
            f" (not answering: {st['not_answering'] or 'none'}) | |"
        )
        out.append(f"| make run stack: RSS of its processes | {st['rss_mb_total']:,.0f} MB | |")
    for name, error in results.get("failed", {}).items():
        out.append(f"| {name} | FAILED: {error[:120]} | |")
    if results["not_measured"]:
        out += ["", "Not measured:"]
        out += [f"- {k}: {v}" for k, v in results["not_measured"].items()]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--new-orders", type=int, default=1_000)
    parser.add_argument("--paid", type=int, default=300, help="new orders paid at localstripe")
    parser.add_argument("--missed", type=int, default=5, help="payment events not applied")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--stack-timeout", type=float, default=180.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, stack)
    except KeyboardInterrupt:
        log("interrupted: everything this run started has been stopped")
        return 130
    output = write_results("data_platform", results, args.output)
    print(markdown(results))
    log(f"raw results: {output}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
