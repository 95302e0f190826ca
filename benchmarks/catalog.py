"""Catalog benchmark: seed scale and GET /api/v1/products at 10k products / 100k lots.

    .venv/bin/python -m benchmarks.catalog          # or: make bench

One run starts a fresh embedded PostgreSQL in a temporary directory (or uses the superuser URL
in BENCH_DATABASE_URL), measures a pgbench baseline on that same server, bulk-loads the catalog
with `devtools.seeds.seed_scale`, starts the development identity provider and the API (uvicorn, as
a subprocess) and drives the catalog endpoints with a bounded closed-loop load from threads in
this process. Numbers are reported as they are and as ratios to the pgbench baseline of the
same run, so that runs on different machines can be compared. Everything listens on loopback
(PostgreSQL on a Unix socket only) and everything started here is stopped at the end.

A markdown summary goes to stdout; the raw results to benchmarks/results/catalog-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    API,
    CpuMeter,
    admin_execute,
    baseline,
    install_signal_handlers,
    latency_summary,
    log,
    migrate,
    ratio,
    results_header,
    seed_catalog,
    server_facts,
    start_api,
    start_database,
    write_results,
)

PAGE = 50
EXPLAIN_RUNS = 5

# `?q=` terms against the synthetic catalog (names "Scale product <i>", SKUs
# "SCALE-<run>-<i:07d>"): about 111, 11, 1111, every product, 10 and no matches.
SEARCH_TERMS = ("product 12", "product 777", "product 4", "scale", "-000123", "no-such-item")


# -- HTTP load --------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    status: int  # 0 when the request failed without a response
    seconds: float
    at: float  # when the request was sent, seconds into the phase
    error: str | None = None


class Spent(Exception):
    """The phase's request or time budget is used up."""


class Budget:
    """Closed loop, bounded: stop issuing after `max_requests` or `max_seconds`."""

    def __init__(self, max_requests: int, max_seconds: float) -> None:
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.issued = 0
        self.started = 0.0
        self.deadline = float("inf")
        self._lock = threading.Lock()

    def begin(self) -> None:
        self.started = time.perf_counter()
        self.deadline = self.started + self.max_seconds

    def take(self) -> None:
        with self._lock:
            if self.issued >= self.max_requests or time.perf_counter() >= self.deadline:
                raise Spent
            self.issued += 1


@dataclass
class Client:
    http: httpx.Client
    rng: random.Random
    budget: Budget
    samples: list[Sample]

    def get(self, kind: str, path: str, params: dict[str, Any] | None = None) -> bytes | None:
        """One timed request: the body of a 200, else None (raises Spent at the end)."""
        self.budget.take()
        started = time.perf_counter()
        at = started - self.budget.started
        try:
            response = self.http.get(path, params=params)
        except httpx.HTTPError as exc:
            elapsed = time.perf_counter() - started
            self.samples.append(Sample(kind, 0, elapsed, at, type(exc).__name__))
            return None
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            self.samples.append(
                Sample(kind, response.status_code, elapsed, at, response.text[:200])
            )
            return None
        self.samples.append(Sample(kind, 200, elapsed, at))
        return response.content


NEXT_CURSOR = re.compile(rb'"next_cursor":\s*(?:null|"([^"]+)")')


def next_cursor(body: bytes | None) -> str | None:
    """The page's next_cursor, read without parsing the whole body (keeps the client light)."""
    found = NEXT_CURSOR.search(body, max(0, len(body) - 1024)) if body else None
    return found.group(1).decode() if found and found.group(1) else None


@dataclass
class Catalog:
    """What the warm-up learned: every page's cursor and every product id."""

    cursors: list[str]
    product_ids: list[str]


Operation = Callable[[Client, Catalog], None]


def products_mix(client: Client, catalog: Catalog) -> None:
    """By requests: 40% first pages, 40% deep pages (a random cursor from the warm-up, then
    three next_cursor hops), 20% searches."""
    roll = client.rng.random()
    if roll < 0.5:
        client.get("first page", f"{API}/products", {"limit": PAGE})
    elif roll < 0.625:
        cursor: str | None = client.rng.choice(catalog.cursors)
        for _ in range(4):
            body = client.get("deep page", f"{API}/products", {"limit": PAGE, "cursor": cursor})
            cursor = next_cursor(body)
            if cursor is None:
                break
    else:
        term = client.rng.choice(SEARCH_TERMS)
        client.get("search", f"{API}/products", {"limit": PAGE, "q": term})


def product_lots(client: Client, catalog: Catalog) -> None:
    product = client.rng.choice(catalog.product_ids)
    client.get("lots", f"{API}/products/{product}/lots")


def low_stock(client: Client, catalog: Catalog) -> None:
    client.get("low-stock", f"{API}/inventory/low-stock")


def latency_stats(samples: list[Sample]) -> dict[str, float]:
    return latency_summary(s.seconds for s in samples)


def run_phase(
    name: str,
    base_url: str,
    tokens: list[str],
    operation: Operation,
    catalog: Catalog,
    *,
    max_requests: int,
    max_seconds: float,
    meter: CpuMeter,
    seed: int,
) -> dict[str, Any]:
    """`len(tokens)` clients in threads, each looping `operation` until the budget is spent."""
    budget = Budget(max_requests, max_seconds)
    connected = threading.Barrier(len(tokens) + 1)
    go = threading.Barrier(len(tokens) + 1)
    per_client: list[list[Sample]] = [[] for _ in tokens]
    failures: list[BaseException] = []

    def worker(index: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            client = Client(http, random.Random(seed * 1000 + index), budget, per_client[index])
            try:
                http.get("/healthz")  # open the keep-alive connection outside the measurement
            except httpx.HTTPError as exc:
                failures.append(exc)
            connected.wait()
            go.wait()
            if failures:
                return
            try:
                while True:
                    operation(client, catalog)
            except Spent:
                pass
            except BaseException as exc:  # reported after the phase, not swallowed
                failures.append(exc)

    threads = [
        threading.Thread(target=worker, args=(i, token), daemon=True)
        for i, token in enumerate(tokens)
    ]
    for thread in threads:
        thread.start()
    connected.wait()
    meter.start()
    budget.begin()
    started = budget.started
    go.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = meter.stop(wall)
    if failures:
        raise RuntimeError(f"{name}: a load client crashed") from failures[0]
    samples = [s for client_samples in per_client for s in client_samples]
    ok = [s for s in samples if s.status == 200]
    errors = [s for s in samples if s.status != 200]
    kinds = sorted({s.kind for s in samples})
    result = {
        "clients": len(tokens),
        "max_requests": max_requests,
        "max_seconds": max_seconds,
        "requests": len(samples),
        "errors": len(errors),
        "statuses": dict(Counter(str(s.status) for s in samples)),
        "error_samples": [f"{s.status} {s.error}" for s in errors[:5]],
        "wall_seconds": round(wall, 2),
        "req_per_s": round(len(samples) / wall, 1) if wall else 0.0,
        "latency": latency_stats(ok),
        "by_kind": {
            kind: {
                "requests": sum(1 for s in samples if s.kind == kind),
                **latency_stats([s for s in ok if s.kind == kind]),
            }
            for kind in kinds
        },
        "cpu_cores_used": cpu,
        "slowest": [
            {"at_s": round(s.at, 2), "kind": s.kind, "ms": round(s.seconds * 1000, 1)}
            for s in sorted(samples, key=lambda s: s.seconds, reverse=True)[:8]
        ],
    }
    lat = result["latency"]
    log(
        f"  {name}: {result['requests']} requests in {wall:.1f} s = {result['req_per_s']} req/s,"
        f" p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms, p99 {lat.get('p99_ms')} ms,"
        f" {len(errors)} errors"
    )
    return result


def warm_up(base_url: str, doctor: str, admin: str, expected: int) -> tuple[Catalog, float]:
    """Walk every page once (collecting cursors and ids), then touch the other endpoints."""
    started = time.perf_counter()
    cursors: list[str] = []
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {doctor}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"{API}/products", params=params).raise_for_status().json()
            ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            cursors.append(cursor)
        for term in SEARCH_TERMS:
            http.get(f"{API}/products", params={"q": term}).raise_for_status()
        for product in ids[:20]:
            http.get(f"{API}/products/{product}/lots").raise_for_status()
        admin_headers = {"Authorization": f"Bearer {admin}"}
        for _ in range(2):
            http.get(f"{API}/inventory/low-stock", headers=admin_headers).raise_for_status()
            http.get(f"{API}/products", headers=admin_headers).raise_for_status()
    if len(ids) != expected:
        raise RuntimeError(f"the catalog walk saw {len(ids)} products, expected {expected}")
    return Catalog(cursors=cursors, product_ids=ids), time.perf_counter() - started


# -- EXPLAIN ANALYZE of the queries behind the endpoints --------------------------------------


def explain(app_url: str, catalog: Catalog) -> dict[str, Any]:
    """Run the services' own queries once, then EXPLAIN (ANALYZE, BUFFERS) the SQL they sent."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from app.catalog import service
    from app.db import make_engine
    from app.inventory import repository

    middle = catalog.cursors[len(catalog.cursors) // 2]
    cases: dict[str, Callable[[Session], object]] = {
        "products: first page (doctor)": lambda s: service.list_products(
            s, limit=PAGE, cursor=None, active=True, search=None
        ),
        "products: deep page (doctor, middle cursor)": lambda s: service.list_products(
            s, limit=PAGE, cursor=middle, active=True, search=None
        ),
        "products: q=product 12": lambda s: service.list_products(
            s, limit=PAGE, cursor=None, active=True, search="product 12"
        ),
        "products: q=no-such-item": lambda s: service.list_products(
            s, limit=PAGE, cursor=None, active=True, search="no-such-item"
        ),
        "inventory: low-stock": lambda s: repository.low_stock(
            s, expiring_within_days=30, limit=PAGE, cursor=None
        ),
    }
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        captured.append((statement, params))

    engine = make_engine(app_url, pool_size=1)
    event.listen(engine, "before_cursor_execute", capture)
    plans: dict[str, Any] = {}
    try:
        with Session(engine) as session:
            for name, run in cases.items():
                captured.clear()
                run(session)
                statement, params = captured[-1]
                runs = []
                for _ in range(EXPLAIN_RUNS):
                    rows = (
                        session.connection()
                        .exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
                        .all()
                    )
                    lines = [str(row[0]) for row in rows]
                    runs.append(
                        {
                            key: float(m.group(1))
                            for line in lines
                            for key in ("Planning", "Execution")
                            if (m := re.search(rf"{key} Time: ([\d.]+) ms", line))
                        }
                    )
                execution = sorted(r.get("Execution", 0.0) for r in runs)
                plans[name] = {
                    "sql": statement,
                    "runs": EXPLAIN_RUNS,
                    "execution_ms_median": execution[len(execution) // 2],
                    "execution_ms_all": execution,
                    "planning_ms_median": sorted(r.get("Planning", 0.0) for r in runs)[
                        len(runs) // 2
                    ],
                    "plan": lines,  # the last run's
                }
            session.rollback()
    finally:
        engine.dispose()
    return plans


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalog", description=__doc__)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--lots", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients")
    parser.add_argument("--requests", type=int, default=3000, help="GET /products budget")
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget of a phase")
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--output", type=Path, default=None, help="results JSON file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    results = results_header("catalog", args)
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    db = start_database(stack, workdir)
    results["postgres"] = {"embedded": db.embedded, **server_facts(db.server)}
    log(f"PostgreSQL {results['postgres']['version'].split(' on ')[0]}")

    results["pgbench"] = baseline(
        db, scale=args.pgbench_scale, clients=8, threads=2, seconds=args.pgbench_seconds
    )
    # The baseline's tables are not needed any more; dropping them keeps their autovacuum out
    # of the API measurements.
    admin_execute(db.server, f"DROP DATABASE {db.pgbench_name}")

    log("applying the migrations")
    migrate(db.owner)
    results["seed"] = seed_catalog(db, products=args.products, lots=args.lots)

    api = start_api(stack, db, workdir, results, workers=args.workers)
    base_url, issuer = api.base_url, api.issuer

    from devtools.identity import obtain_dev_token

    admin = obtain_dev_token(issuer, role="admin")["access_token"]
    doctor = obtain_dev_token(issuer, role="doctor")["access_token"]
    results["api"] = {
        "server": "portal serve (uvicorn workers, SO_REUSEPORT)",
        "workers": args.workers,
        "database_pool_size": int(os.environ.get("DATABASE_POOL_SIZE", "10")),
        "token": "JWT" if admin.count(".") == 2 else "opaque",
    }

    log("warm-up: walking every page of the catalog")
    catalog, warm_seconds = warm_up(base_url, doctor, admin, expected=args.products)
    results["warm_up_seconds"] = round(warm_seconds, 2)
    meter = CpuMeter(
        groups={
            "load_generator": os.getpid(),
            "api": api.api_pid,
            "postgres": db.postmaster_pid,
            "identity_provider": api.identity_provider_pid,
        },
        # this process's children are the API and the identity provider, counted apart
        alone=frozenset({"load_generator"}),
    )
    # Three doctors for each admin: doctors only see active products (one more filter).
    mixed = [admin if i % 4 == 3 else doctor for i in range(args.clients)]
    phases: dict[str, Any] = {}

    log("serial (one client): latency without queueing")
    phases["serial products"] = run_phase(
        "serial products", base_url, [doctor], products_mix, catalog,
        max_requests=300, max_seconds=args.seconds, meter=meter, seed=1,
    )  # fmt: skip
    phases["serial lots"] = run_phase(
        "serial lots", base_url, [doctor], product_lots, catalog,
        max_requests=100, max_seconds=args.seconds, meter=meter, seed=2,
    )  # fmt: skip
    phases["serial low-stock"] = run_phase(
        "serial low-stock", base_url, [admin], low_stock, catalog,
        max_requests=10, max_seconds=args.seconds, meter=meter, seed=3,
    )  # fmt: skip

    log(f"concurrent ({args.clients} clients)")
    phases["products"] = run_phase(
        "GET /products", base_url, mixed, products_mix, catalog,
        max_requests=args.requests, max_seconds=args.seconds, meter=meter, seed=4,
    )  # fmt: skip
    phases["lots"] = run_phase(
        "GET /products/{id}/lots", base_url, mixed, product_lots, catalog,
        max_requests=1000, max_seconds=args.seconds / 2, meter=meter, seed=5,
    )  # fmt: skip
    phases["low-stock"] = run_phase(
        "GET /inventory/low-stock", base_url, [admin] * 4, low_stock, catalog,
        max_requests=100, max_seconds=args.seconds, meter=meter, seed=6,
    )  # fmt: skip
    results["phases"] = phases

    log("EXPLAIN ANALYZE of the queries behind the endpoints")
    results["explain"] = explain(db.app, catalog)
    # Tokens are checked at the provider's userinfo endpoint when opaque (cached per worker).
    results["api"]["identity_provider_userinfo_calls"] = api.userinfo_calls()

    tpcb = results["pgbench"]["tpcb"]["tps"]
    select_only = results["pgbench"]["select_only"]["tps"]
    results["ratios"] = {
        "seed_rows_per_s_per_tpcb_tps": ratio(results["seed"]["rows_per_s"], tpcb),
        "products_req_per_s_per_select_only_tps": ratio(
            phases["products"]["req_per_s"], select_only
        ),
        "lots_req_per_s_per_select_only_tps": ratio(phases["lots"]["req_per_s"], select_only),
        "low_stock_req_per_s_per_select_only_tps": ratio(
            phases["low-stock"]["req_per_s"], select_only
        ),
    }
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["ok"] = True
    return results


def markdown(results: dict[str, Any]) -> str:
    m, pg, base = results["machine"], results["postgres"], results["pgbench"]
    seed, phases, ratios = results["seed"], results["phases"], results["ratios"]
    seed_cpu = seed["cpu_cores_used"]
    out = [
        f"## Catalog benchmark, {results['started_at']}",
        "",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB; load generator,"
        f" API and PostgreSQL share them. Load average at start {m['load_average_at_start']}.",
        f"- PostgreSQL: {pg['version'].split(' on ')[0]}"
        f" ({'embedded, fresh' if pg['embedded'] else 'BENCH_DATABASE_URL'});"
        f" shared_buffers {pg['shared_buffers']}, synchronous_commit {pg['synchronous_commit']}.",
        f"- API: portal serve, {results['api']['workers']} worker(s), pool"
        f" {results['api']['database_pool_size']} per worker, {results['api']['token']} tokens.",
        f"- Code: {results['code']['commit']}"
        + (
            f" with uncommitted changes to {', '.join(results['code']['uncommitted_changes'])}"
            if results["code"]["uncommitted_changes"]
            else ""
        )
        + ".",
        "",
        "### Baseline (pgbench on the same server)",
        "",
        "| workload | clients/threads | tps | avg latency | cores: postgres / pgbench / other |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for label, key in (("TPC-B-like", "tpcb"), ("select-only (-S)", "select_only")):
        r = base[key]
        cpu = r["cpu_cores_used"]
        out.append(
            f"| {label}, scale {base['scale']}, {base['seconds']} s"
            f" | {base['clients']}/{base['threads']} | {r['tps']:,.0f}"
            f" | {r['latency_avg_ms']} ms"
            f" | {cpu.get('postgres', '-')} / {cpu['pgbench']} / {cpu['other']} |"
        )
    out += [
        "",
        "### Seed scale",
        "",
        f"{seed['products']:,} products + {seed['lots']:,} lots + {seed['movements']:,}"
        f" movements = {seed['rows']:,} rows in {seed['seconds']} s:"
        f" **{seed['rows_per_s']:,.0f} rows/s**"
        f" ({ratios['seed_rows_per_s_per_tpcb_tps']:.3g} x pgbench TPC-B tps;"
        f" cores: seed {seed_cpu['seed']} / postgres {seed_cpu.get('postgres', '-')}"
        f" / other {seed_cpu['other']}).",
        "",
        "### HTTP",
        "",
        "| phase | clients | requests | errors | req/s | p50 | p95 | p99 | max"
        " | cores: API / postgres / client / other |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in phases.items():
        lat, cpu = r["latency"], r["cpu_cores_used"]
        out.append(
            f"| {name} | {r['clients']} | {r['requests']} | {r['errors']} | {r['req_per_s']}"
            f" | {lat.get('p50_ms')} ms | {lat.get('p95_ms')} ms | {lat.get('p99_ms')} ms"
            f" | {lat.get('max_ms')} ms | {cpu['api']} / {cpu.get('postgres', '-')}"
            f" / {cpu['load_generator']} / {cpu['other']} |"
        )
    out += [
        "",
        "GET /products by kind (concurrent phase):",
        "",
        "| kind | requests | p50 | p95 | p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, r in phases["products"]["by_kind"].items():
        out.append(
            f"| {kind} | {r['requests']} | {r.get('p50_ms')} ms | {r.get('p95_ms')} ms"
            f" | {r.get('p99_ms')} ms |"
        )
    out += [
        "",
        "Cores are averages over the phase, of the machine's"
        f" {m['cpus']}; *other* is CPU used by processes this benchmark did not start.",
        "",
        "### Ratios (same run)",
        "",
        f"- seed rows/s / pgbench TPC-B tps: {ratios['seed_rows_per_s_per_tpcb_tps']:.3g}",
        "- GET /products req/s / pgbench select-only tps:"
        f" {ratios['products_req_per_s_per_select_only_tps']:.3g}",
        "- GET /products/{id}/lots req/s / select-only tps:"
        f" {ratios['lots_req_per_s_per_select_only_tps']:.3g}",
        "- GET /inventory/low-stock req/s / select-only tps:"
        f" {ratios['low_stock_req_per_s_per_select_only_tps']:.3g}",
        "",
        "### EXPLAIN ANALYZE (server-side execution time)",
        "",
    ]
    for name, plan in results["explain"].items():
        out.append(
            f"- {name}: execution {plan['execution_ms_median']} ms (median of {plan['runs']}),"
            f" planning {plan['planning_ms_median']} ms"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    with contextlib.ExitStack() as stack:
        results = run(args, stack)
    output = write_results("catalog", results, args.output)
    print(markdown(results))
    log(f"raw results: {output}")
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    sys.exit(main())
