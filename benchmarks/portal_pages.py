"""Staff portal benchmark: how long each page of the Streamlit app takes on the 1M-order data.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m benchmarks.portal_pages
    .venv/bin/python -m benchmarks.portal_pages --orders 100000 --runs 3

One run, on one PostgreSQL server (a fresh embedded one, or BENCH_DATABASE_URL's):

1. **Baseline**: pgbench TPC-B-like (`-s 10 -c 8 -j 2`) in a database of its own.
2. **Seed**: `devtools.scale.seed_history` (what `portal seed scale --orders N` runs), then
   VACUUM ANALYZE; **dbt run --full-refresh** builds the marts the analytics pages read.
3. The development identity provider and the API (`portal serve`) on loopback, as under
   `make run`; an admin's and a doctor's access token from the provider's real code flow.
4. **Each page**, run by Streamlit's AppTest in this process exactly as the server runs it for a
   browser (the app's sign-in check against the API, the page's API calls and mart queries):
   after one warm-up pass over every page (the imports a server process does once), a load
   with the marts' cache emptied (`cold`), then `--runs` loads more (`warm`: the marts' answers
   cached for UI_CACHE_SECONDS, as for the next user within a minute). What the browser adds
   (drawing the page) is not included.
5. **Each mart query** of the analytics pages on its own, uncached, over the default range.

Raw results go to benchmarks/results/portal_pages-<date>.json, a markdown summary to stdout.
Target (reported, not asserted): every page under 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from app.db import with_user
from benchmarks.data_platform import dbt, migrate_all_heads, seed
from benchmarks.harness import (
    admin_execute,
    baseline,
    install_signal_handlers,
    latency_summary,
    log,
    results_header,
    server_facts,
    start_api,
    start_database,
    write_results,
)

TARGET_SECONDS = 2.0
ANALYST_ROLE = "portal_analyst"
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboards" / "app.py"


def _pages() -> list[tuple[str, str]]:
    """(role, file) of every page of the portal on this branch, in menu order."""
    from dashboards.navigation import available

    return [(role, page.file) for role in ("admin", "doctor") for page in available(role)]


def page_times(
    api_url: str, analytics_url: str, tokens: dict[str, str], runs: int
) -> dict[str, Any]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboards.settings import get_ui_settings

    os.environ.update(
        UI_API_URL=api_url,
        UI_ANALYTICS_DATABASE_URL=analytics_url,
        UI_DAGSTER_URL="",
        ENVIRONMENT="development",
    )
    get_ui_settings.cache_clear()
    # Each page once first, so what one server process loads once (Streamlit's modules,
    # pandas, the charts' libraries) is not counted against the first page measured.
    for role, file in _pages():
        warm_up = AppTest.from_file(str(APP), default_timeout=120)
        warm_up.user = {"is_logged_in": True, "sub": role, "tokens": {"access": tokens[role]}}
        warm_up.run()
        warm_up.switch_page(f"pages/{file}").run()
    results: dict[str, Any] = {}
    for role, file in _pages():
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.user = {"is_logged_in": True, "sub": role, "tokens": {"access": tokens[role]}}
        at.run()  # the role's menu (switch_page needs the registered pages)
        at.switch_page(f"pages/{file}")
        st.cache_data.clear()
        started = time.perf_counter()
        at.run()
        cold = time.perf_counter() - started
        if at.exception:
            raise RuntimeError(f"{file}: {at.exception[0].value}")
        warm = []
        for _ in range(runs):
            started = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - started)
        summary = latency_summary(warm)
        results[file] = {
            "role": role,
            "cold_seconds": round(cold, 3),
            "warm": summary,
            "under_target": cold < TARGET_SECONDS and summary["max_ms"] < TARGET_SECONDS * 1000,
        }
        log(f"  {file}: cold {cold:.2f} s, warm p50 {summary['p50_ms']:.0f} ms")
    return results


def mart_query_times(analytics_url: str) -> dict[str, float]:
    from dashboards import marts

    today = datetime.now(UTC).date()
    span = {"start": today - timedelta(days=29), "end": today}
    queries = {
        "ORDERS_PER_DAY": (marts.ORDERS_PER_DAY, span),
        "REVENUE_PER_DAY": (marts.REVENUE_PER_DAY, span),
        "ORDERS_BY_STATUS": (marts.ORDERS_BY_STATUS, span),
        "FULFILMENT_PERCENTILES": (marts.FULFILMENT_PERCENTILES, span),
        "FULFILMENT_PER_DAY": (marts.FULFILMENT_PER_DAY, span),
        "LOW_STOCK": (marts.LOW_STOCK, None),
        "EXPIRING": (marts.EXPIRING, {"horizon": today + timedelta(days=30)}),
        "MONTHLY_METRICS": (
            marts.MONTHLY_METRICS,
            {"start": today.replace(month=1, day=1) - timedelta(days=366), "end": today},
        ),
    }
    times = {}
    with psycopg.connect(analytics_url) as conn:
        for name, (sql, params) in queries.items():
            started = time.perf_counter()
            conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
            times[name] = round(time.perf_counter() - started, 3)
    return times


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    from devtools.identity import obtain_dev_token

    results = results_header("portal_pages", args)
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
    results["seed"] = seed(db, orders=args.orders, products=args.products, seed_value=args.seed)
    results["dbt_run"] = dbt(db, ["run", "--full-refresh"])
    api = start_api(stack, db, workdir, results, workers=1)
    tokens = {
        role: obtain_dev_token(api.issuer, role=role)["access_token"]
        for role in ("admin", "doctor")
    }
    analytics_url = with_user(db.owner, ANALYST_ROLE)
    log("mart queries, uncached")
    results["mart_queries_seconds"] = mart_query_times(analytics_url)
    log(f"pages: a cold load, then {args.runs} warm loads each")
    results["pages"] = page_times(api.base_url, analytics_url, tokens, args.runs)
    results["ok"] = True
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"pgbench TPC-B-like: {results['pgbench']['tpcb']['tps']:,.0f} tps;"
        f" seed {results['seed']['orders']:,} orders;"
        f" dbt run {results['dbt_run'].get('seconds', '?')} s",
        "",
        "| page | role | first load, caches empty | warm p50 | warm max | < 2 s |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for file, page in results["pages"].items():
        lines.append(
            f"| `{file}` | {page['role']} | {page['cold_seconds']:.2f} s"
            f" | {page['warm']['p50_ms']:.0f} ms | {page['warm']['max_ms']:.0f} ms"
            f" | {'yes' if page['under_target'] else 'NO'} |"
        )
    lines += ["", "| mart query (uncached) | seconds |", "| --- | ---: |"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in results["mart_queries_seconds"].items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5, help="warm loads of each page")
    parser.add_argument("--pgbench-seconds", type=int, default=15)
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
    output = write_results("portal_pages", results, args.output)
    print(markdown(results))
    log(f"raw results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
