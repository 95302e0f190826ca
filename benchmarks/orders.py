"""Orders benchmark: POST /api/v1/orders against 10k products / 100k lots.

    .venv/bin/python -m benchmarks.orders
    .venv/bin/python -m benchmarks.orders --rate 300 --seconds 20 --clients 16

Like the catalog benchmark (the shared pieces are in benchmarks/harness.py), one run starts a
fresh embedded PostgreSQL (or uses BENCH_DATABASE_URL), measures pgbench TPC-B on that server,
seeds the catalog with `devtools.seeds.seed_scale`, and starts the development identity provider and
the API (`portal serve`, 2 workers by default). It then creates doctors (users whose OIDC subject is
their e-mail) with a few patients each, signs every doctor in at the provider, and measures
orders of 1-3 random products, 1-2 units each, placed by a random doctor for one of their
patients:

1. serial: one client, closed loop (latency without queueing);
2. open loop at a fixed arrival rate (default 300 orders/s for 20 s). Every request has a
   scheduled send time and its latency is measured from that time, so time spent waiting for a
   connection or in any queue counts (no coordinated omission);
3. saturation: N concurrent clients (default 16) in a closed loop;
4. open loop again at a fraction (default 60 %) of the rate that saturation reached, to show the
   latency below capacity.

During each phase a sampler reads pg_stat_activity and pg_locks (every 50 ms) to see where the
API's database sessions wait, in particular on the audit chain's advisory lock. After the load it
traces the SQL of one order in-process (round trips and their times), checks the stock ledger
and the audit chain, and compares the orders in the database with the 201s received.

The load generator sends with `harness.RawHttpClient`, a minimal asyncio HTTP/1.1 keep-alive
client, not httpx, whose 0.7-2.5 ms of CPU per request (vs ~0.02 ms) took up to most of a core
from the API and PostgreSQL sharing the machine.

A markdown summary goes to stdout; the raw results to benchmarks/results/orders-<date>.json.
Targets it reports against (it does not assert them): p95 <= 50 ms at 300 orders/s, and
saturation orders/s >= 25 % of the same run's pgbench TPC-B tps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import (
    API,
    ApiStack,
    CpuMeter,
    Database,
    RawHttpClient,
    RawHttpError,
    admin_execute,
    baseline,
    busy_processes,
    install_signal_handlers,
    latency_summary,
    log,
    migrate,
    percentile,
    ratio,
    results_header,
    seed_catalog,
    server_facts,
    start_api,
    start_database,
    write_results,
)

ORDERS = f"{API}/orders"
TARGET_P95_MS = 50.0
TARGET_RATE = 300.0
TARGET_TPCB_FRACTION = 0.25
INSUFFICIENT_STOCK = "insufficient-stock"
TRACE_ORDERS = 20


# -- doctors, patients and tokens -------------------------------------------------------------


@dataclass
class Doctor:
    email: str
    user_id: uuid.UUID
    patients: list[str]
    token: str = ""


def create_doctors(app_url: str, *, doctors: int, patients_each: int) -> list[Doctor]:
    """Doctors as `users` rows whose OIDC subject is their e-mail (what the development provider
    puts in `sub`), and their patients through the patients service, in one committed session."""
    from sqlalchemy.orm import Session

    from app.actor import Actor, Role
    from app.audit import service as audit
    from app.db import make_engine
    from app.models import User
    from app.patients.schemas import PatientCreate
    from app.patients.service import create_patient

    engine = make_engine(app_url, pool_size=1)
    made: list[Doctor] = []
    setup = Actor.system("bench-orders")
    try:
        with Session(engine) as session, session.begin():
            for i in range(doctors):
                email = f"bench.doctor{i:02d}@bench.clinic"
                user = User(
                    email=email,
                    role="doctor",
                    full_name=f"Bench Doctor {i:02d}",
                    oidc_subject=email,
                    active=True,
                )
                session.add(user)
                session.flush()
                audit.record(
                    session,
                    setup,
                    "user.invited",
                    "user",
                    user.id,
                    after={"email": email, "role": "doctor"},
                )
                actor = Actor(subject=email, role=Role.DOCTOR, user_id=user.id, email=email)
                patients = [
                    create_patient(
                        session,
                        actor,
                        PatientCreate(
                            name=f"Bench Patient {i:02d}-{j}",
                            email=f"bench.patient{i:02d}.{j}@example.com",
                            phone=f"+1 555 01{i:02d} {j:02d}",
                            date_of_birth=date(1950 + (7 * i + j) % 55, 1 + i % 12, 1 + j),
                        ),
                    )
                    for j in range(patients_each)
                ]
                made.append(Doctor(email, user.id, [str(p.id) for p in patients]))
    finally:
        engine.dispose()
    return made


def sign_in(issuer: str, doctors: list[Doctor]) -> None:
    """Each doctor's opaque access token, through the provider's real login flow."""
    from devtools.identity import obtain_dev_token

    for doctor in doctors:
        doctor.token = obtain_dev_token(issuer, role="doctor", email=doctor.email)["access_token"]


def product_ids(app_url: str) -> list[str]:
    with psycopg.connect(app_url) as conn:
        rows = conn.execute("SELECT id FROM products WHERE active ORDER BY sku").fetchall()
    return [str(row[0]) for row in rows]


class OrderMaker:
    """Random orders: a random doctor, one of their patients, 1-3 distinct random products with
    1-2 units each."""

    def __init__(self, doctors: list[Doctor], products: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.doctors = doctors
        self.products = products
        self.headers = {
            d.email: RawHttpClient.header_block(
                {"Authorization": f"Bearer {d.token}", "Content-Type": "application/json"}
            )
            for d in doctors
        }

    def next(self) -> tuple[bytes, bytes]:
        """The doctor's header block (for `RawHttpClient.request`) and the JSON body."""
        doctor = self.rng.choice(self.doctors)
        items = [
            {"product_id": product, "quantity": self.rng.randint(1, 2)}
            for product in self.rng.sample(self.products, self.rng.randint(1, 3))
        ]
        body = {"patient_id": self.rng.choice(doctor.patients), "items": items}
        return self.headers[doctor.email], json.dumps(body).encode()


# -- where the database sessions wait (sampled) -----------------------------------------------

# The audit chain's transaction-scoped advisory lock (app.audit.service.AUDIT_CHAIN_LOCK). A
# bigint key shows in pg_locks as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
SAMPLE_SQL = """
SELECT a.state, a.wait_event_type, a.wait_event, l.granted
FROM pg_stat_activity a
LEFT JOIN pg_locks l
  ON l.pid = a.pid AND l.locktype = 'advisory' AND l.classid = %(high)s
 AND l.objid = %(low)s AND l.objsubid = 1
WHERE a.application_name = 'portal' AND a.pid <> pg_backend_pid()
"""


class WaitSampler:
    """A thread that samples what the API's database sessions are doing, every `interval` s.

    Per sample it counts the sessions in a transaction (active or idle in transaction), those
    waiting for the audit chain lock, and what the lock's holder is doing: running a statement,
    waiting on I/O (e.g. the commit's WAL flush), or idle in transaction (waiting for the API
    process to send the next statement or the COMMIT).
    """

    def __init__(self, url: str, interval: float) -> None:
        from app.audit.service import AUDIT_CHAIN_LOCK

        self.url = url
        self.interval = interval
        self.params = {"high": AUDIT_CHAIN_LOCK >> 32, "low": AUDIT_CHAIN_LOCK & 0xFFFFFFFF}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.in_transaction = 0
        self.active = 0
        self.idle_in_transaction = 0
        self.lock_held = 0
        self.lock_waiters = 0
        self.lock_waiters_max = 0
        self.holder: Counter[str] = Counter()
        self.non_lock_waits: Counter[str] = Counter()
        self.error: str | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        n = self.samples or 1
        return {
            "interval_s": self.interval,
            "samples": self.samples,
            "mean_sessions_in_transaction": round(self.in_transaction / n, 2),
            "mean_sessions_running_statement": round(self.active / n, 2),
            "mean_sessions_idle_in_transaction": round(self.idle_in_transaction / n, 2),
            "audit_lock_held_fraction": round(self.lock_held / n, 3),
            "mean_audit_lock_waiters": round(self.lock_waiters / n, 2),
            "max_audit_lock_waiters": self.lock_waiters_max,
            "audit_lock_holder_doing": {
                k: round(v / max(1, self.lock_held), 3) for k, v in self.holder.most_common()
            },
            "other_waits_per_sample": {
                k: round(v / n, 3) for k, v in self.non_lock_waits.most_common(8)
            },
            "error": self.error,
        }

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    self._take(conn.execute(SAMPLE_SQL, self.params).fetchall())
                    pause = self.interval - (time.perf_counter() - started)
                    if pause > 0:
                        self._stop.wait(pause)
        except psycopg.Error as exc:  # diagnostics only: the phase goes on without it
            self.error = f"{type(exc).__name__}: {exc}"

    def _take(self, rows: list[tuple[Any, ...]]) -> None:
        self.samples += 1
        waiters = 0
        for state, wait_type, wait_event, granted in rows:
            if state not in ("active", "idle in transaction"):
                continue
            self.in_transaction += 1
            if state == "idle in transaction":
                self.idle_in_transaction += 1
            else:
                self.active += 1
            if granted is False:
                waiters += 1
                continue
            if granted:
                self.lock_held += 1
                if state == "idle in transaction":
                    doing = "idle in transaction (waiting for the API)"
                elif wait_type:
                    doing = f"waiting {wait_type}:{wait_event}"
                else:
                    doing = "running a statement"
                self.holder[doing] += 1
            elif state == "active" and wait_type:
                self.non_lock_waits[f"{wait_type}:{wait_event}"] += 1
        self.lock_waiters += waiters
        self.lock_waiters_max = max(self.lock_waiters_max, waiters)


# -- HTTP load --------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int  # 0: no response (connection error, timeout, or still outstanding at the end)
    latency: float  # seconds, from the scheduled send time (open loop) or the send (closed)
    service: float  # seconds from the moment the request was handed to the client
    at: float  # scheduled (open) or actual (closed) send time, seconds into the phase
    late: float = 0.0  # how late the dispatcher handed the request to the client
    detail: str | None = None


def classify(outcomes: list[Outcome]) -> dict[str, int]:
    created = sum(1 for o in outcomes if o.status == 201)
    stock = sum(1 for o in outcomes if o.status == 409 and o.detail == INSUFFICIENT_STOCK)
    return {"201": created, "409": stock, "other": len(outcomes) - created - stock}


async def post_order(client: RawHttpClient, headers: bytes, body: bytes) -> tuple[int, str | None]:
    """POST one order; the body is parsed only when it is not a 201."""
    try:
        status, content = await client.request("POST", ORDERS, headers=headers, body=body)
    except (OSError, RawHttpError) as exc:  # OSError includes TimeoutError, ConnectionError
        return 0, type(exc).__name__
    if status == 201:
        return 201, None
    detail: str | None = content.decode(errors="replace")[:300]
    if status == 409:
        with contextlib.suppress(ValueError):
            problem_type = str(json.loads(content).get("type", ""))
            if problem_type.endswith("/" + INSUFFICIENT_STOCK):
                detail = INSUFFICIENT_STOCK
    return status, detail


@contextlib.asynccontextmanager
async def connections_to(base_url: str, n: int, timeout: float) -> Any:
    """`n` clients of one keep-alive connection each, connected (and a GET /healthz sent on
    each) before the measurement. `RawHttpClient`, not httpx: see the module's docstring."""
    clients = [RawHttpClient(base_url, timeout=timeout) for _ in range(n)]
    try:
        await asyncio.gather(*(client.request("GET", "/healthz") for client in clients))
        yield clients
    finally:
        for client in clients:
            await client.close()


async def open_loop(
    base_url: str,
    maker: OrderMaker,
    *,
    rate: float,
    seconds: float,
    connections: int,
    drain_seconds: float,
    begin: Callable[[], None],
) -> tuple[list[Outcome], float, dict[str, Any]]:
    """Requests are due at fixed times start + i/rate, whatever happened to earlier ones.

    A dispatcher puts each request on a FIFO queue at its due time; `connections` senders, one
    keep-alive connection each, take them off in order. Latency is measured from the due time,
    so time spent queued for a free connection counts. Requests still unanswered
    `drain_seconds` after the last due time are abandoned and reported with the time they had
    waited so far (a lower bound).
    """
    total = int(rate * seconds)
    requests = [maker.next() for _ in range(total)]
    outcomes: list[Outcome | None] = [None] * total
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    dispatcher_late: list[float] = []
    backlog_max = 0

    async with connections_to(base_url, connections, timeout=seconds + drain_seconds) as clients:
        begin()
        start = time.perf_counter()

        async def sender(client: RawHttpClient) -> None:
            while True:
                index, due = await queue.get()
                handed = time.perf_counter()
                status, detail = await post_order(client, *requests[index])
                done = time.perf_counter()
                outcomes[index] = Outcome(
                    status, done - due, done - handed, due - start, handed - due, detail
                )
                queue.task_done()

        senders = [asyncio.create_task(sender(client)) for client in clients]
        sent = 0
        while sent < total:
            now = time.perf_counter()
            while sent < total and start + sent / rate <= now:
                due = start + sent / rate
                queue.put_nowait((sent, due))
                dispatcher_late.append(now - due)
                sent += 1
            backlog_max = max(backlog_max, queue.qsize())
            if sent < total:
                await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        dispatched = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), timeout=drain_seconds)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        ended = time.perf_counter()
    final = [
        o
        if o is not None
        else Outcome(0, ended - (start + i / rate), 0.0, i / rate, 0.0, "unanswered at the end")
        for i, o in enumerate(outcomes)
    ]
    late = sorted(x * 1000 for x in dispatcher_late)
    extra = {
        "connections": connections,
        "dispatch_seconds": round(dispatched - start, 2),
        "achieved_rate_per_s": round(total / (dispatched - start), 1),
        "dispatcher_late_ms": {
            "p50": round(percentile(late, 50), 2),
            "p99": round(percentile(late, 99), 2),
            "max": round(late[-1], 2) if late else None,
        },
        "queued_for_a_connection": latency_summary(o.late for o in final if o.status),
        "max_backlog": backlog_max,
        "unanswered": sum(1 for o in outcomes if o is None),
    }
    return final, ended - start, extra


async def closed_loop(
    base_url: str,
    maker: OrderMaker,
    *,
    clients: int,
    seconds: float,
    max_requests: int,
    begin: Callable[[], None],
) -> tuple[list[Outcome], float, dict[str, Any]]:
    """`clients` loops, each sending its next order when the previous answer arrives."""
    outcomes: list[Outcome] = []
    async with connections_to(base_url, clients, timeout=60) as connected:
        begin()
        start = time.perf_counter()
        deadline = start + seconds

        async def loop(client: RawHttpClient) -> None:
            while time.perf_counter() < deadline and len(outcomes) < max_requests:
                headers, body = maker.next()
                sent = time.perf_counter()
                status, detail = await post_order(client, headers, body)
                elapsed = time.perf_counter() - sent
                outcomes.append(Outcome(status, elapsed, elapsed, sent - start, 0.0, detail))

        await asyncio.gather(*(loop(client) for client in connected))
        ended = time.perf_counter()
    return outcomes, ended - start, {}


def run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def timeline(outcomes: list[Outcome], width: float = 1.0) -> list[dict[str, Any]]:
    """Per `width`-second window of send time: requests, p50/p95 latency (all), statuses."""
    windows: dict[int, list[Outcome]] = {}
    for o in outcomes:
        windows.setdefault(int(o.at // width), []).append(o)
    rows = []
    for index in sorted(windows):
        group = windows[index]
        lat = sorted(o.latency * 1000 for o in group)
        rows.append(
            {
                "from_s": round(index * width, 1),
                "requests": len(group),
                "p50_ms": round(percentile(lat, 50), 1) if lat else None,
                "p95_ms": round(percentile(lat, 95), 1) if lat else None,
                **classify(group),
            }
        )
    return rows


@dataclass
class Phases:
    """Runs the phases with the same CPU meter and wait sampler, and keeps their results."""

    base_url: str
    maker: OrderMaker
    meter: CpuMeter
    sampler_url: str
    sample_interval: float
    results: dict[str, Any] = field(default_factory=dict)
    created: int = 0  # 201s over all phases

    def run(
        self, name: str, describe: dict[str, Any], load: Callable[[Callable[[], None]], Any]
    ) -> dict[str, Any]:
        """`load(begin)` connects its clients, calls `begin()` and then sends (measured)."""
        sampler = WaitSampler(self.sampler_url, self.sample_interval)
        # what else keeps the machine busy, a few seconds into the phase (like `top`)
        busy: list[dict[str, Any]] = []
        snapshot = threading.Timer(
            3.0, lambda: busy.extend(busy_processes(2.0, ours=self.meter.pids()))
        )
        snapshot.daemon = True

        def begin() -> None:
            self.meter.start()
            sampler.start()
            snapshot.start()

        try:
            outcomes, wall, extra = run_async(load(begin))
        finally:
            waits = sampler.stop()
            snapshot.cancel()
        cpu = self.meter.stop(wall)
        counts = classify(outcomes)
        self.created += counts["201"]
        answered = [o for o in outcomes if o.status in (201, 409)]
        others = Counter(
            f"{o.status} {o.detail}"[:160]
            for o in outcomes
            if o.status != 201 and not (o.status == 409 and o.detail == INSUFFICIENT_STOCK)
        )
        result: dict[str, Any] = {
            **describe,
            "requests": len(outcomes),
            "statuses": counts,
            "other_statuses": dict(others.most_common(6)) if counts["other"] else {},
            "wall_seconds": round(wall, 2),
            "requests_per_s": round(len(outcomes) / wall, 1) if wall else 0.0,
            "orders_per_s": round(counts["201"] / wall, 1) if wall else 0.0,
            # every request (errors and the unanswered, at the time they had waited, included)
            "latency": latency_summary(o.latency for o in outcomes),
            "latency_answered": latency_summary(o.latency for o in answered),
            "service_time": latency_summary(o.service for o in answered),
            "cpu_cores_used": cpu,
            "database_sessions": waits,
            "busy_processes": busy,
            **extra,
        }
        if describe.get("mode") == "open loop":
            result["timeline"] = timeline(outcomes)
        lat = result["latency"]
        log(
            f"  {name}: {len(outcomes)} requests in {wall:.1f} s ="
            f" {result['requests_per_s']} req/s, {result['orders_per_s']} orders/s;"
            f" p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms,"
            f" p99 {lat.get('p99_ms')} ms; 201/409/other {counts['201']}/{counts['409']}"
            f"/{counts['other']}; audit lock held {waits['audit_lock_held_fraction']:.0%},"
            f" {waits['mean_audit_lock_waiters']} waiting; cores {cpu}"
        )
        self.results[name] = result
        return result


# -- one order, traced in-process -------------------------------------------------------------


def trace_orders(app_url: str, doctors: list[Doctor], products: list[str]) -> dict[str, Any]:
    """The request's database work, in this process and without concurrency: the signed-in user
    lookup, `create_order`, `order_view` and COMMIT, with every statement and its round-trip time.

    The pool's pre-ping (`SELECT 1` on every checkout) is sent outside the statement events; it is
    counted separately. Reports one order's statements and medians over TRACE_ORDERS orders.
    """
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from app.actor import Actor, Role
    from app.db import make_engine
    from app.orders import flows as order_flows
    from app.orders import service as orders
    from app.orders.schemas import OrderCreate, OrderLine
    from app.users.service import resolve_signed_in_user

    engine = make_engine(app_url, pool_size=1)
    statements: list[dict[str, Any]] = []
    clock: dict[str, float] = {}

    def before(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        clock["sent"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        elapsed = time.perf_counter() - clock["sent"]
        text = " ".join(statement.split())
        statements.append({"sql": text[:140], "ms": round(elapsed * 1000, 3), "at": clock["sent"]})

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    rng = random.Random(99)
    traces = []
    try:
        for i in range(TRACE_ORDERS):
            doctor = doctors[i % len(doctors)]
            statements.clear()
            started = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                user = resolve_signed_in_user(
                    session,
                    subject=doctor.email,
                    email=doctor.email,
                    email_verified=True,
                    claimed_role=Role.DOCTOR,
                    auto_provision=True,
                )
                actor = Actor(
                    subject=doctor.email, role=Role.DOCTOR, user_id=user.id, email=user.email
                )
                data = OrderCreate(
                    patient_id=uuid.UUID(rng.choice(doctor.patients)),
                    items=[
                        OrderLine(product_id=uuid.UUID(p), quantity=rng.randint(1, 2))
                        for p in rng.sample(products, 3)
                    ],
                )
                placed = order_flows.place_order(session, actor, data)
                orders.order_view(placed.created.parts)
                commit_started = time.perf_counter()
                session.commit()
                ended = time.perf_counter()
            locked = next(
                (s["at"] for s in statements if "pg_advisory_xact_lock" in s["sql"]), None
            )
            traces.append(
                {
                    "statements": len(statements),
                    "db_ms": sum(s["ms"] for s in statements) + (ended - commit_started) * 1000,
                    "total_ms": (ended - started) * 1000,
                    "commit_ms": (ended - commit_started) * 1000,
                    "lock_to_commit_ms": (ended - locked) * 1000 if locked else None,
                    "after_lock_statements": sum(
                        1 for s in statements if locked is not None and s["at"] > locked
                    ),
                    "detail": [{"sql": s["sql"], "ms": s["ms"]} for s in statements],
                }
            )
    finally:
        engine.dispose()

    def median(key: str) -> float | None:
        values = sorted(t[key] for t in traces if t[key] is not None)
        return round(values[len(values) // 2], 2) if values else None

    return {
        "orders": len(traces),
        "items_per_order": 3,
        "statements_per_order": median("statements"),
        # + the pool's pre-ping and the COMMIT
        "round_trips_per_order": (median("statements") or 0) + 2,
        "median_total_ms": median("total_ms"),
        "median_db_ms": median("db_ms"),
        "median_commit_ms": median("commit_ms"),
        "median_audit_lock_to_commit_ms": median("lock_to_commit_ms"),
        "statements_after_audit_lock": median("after_lock_statements"),
        "example": traces[len(traces) // 2]["detail"],
    }


# -- integrity --------------------------------------------------------------------------------


def integrity(app_url: str) -> dict[str, Any]:
    """The ledger, the lots' counters, the allocations and the audit chain, after the load."""
    from sqlalchemy import func, select, text
    from sqlalchemy.orm import Session

    from app.audit.service import seal, verify_chain
    from app.db import make_engine
    from app.inventory.repository import lots_disagreeing_with_ledger
    from app.models import AuditEntry, Lot, Order

    engine = make_engine(app_url, pool_size=1)
    try:
        with Session(engine) as session:
            disagreeing = lots_disagreeing_with_ledger(session)
            over_reserved = session.scalar(
                select(func.count())
                .select_from(Lot)
                .where(Lot.quantity_reserved > Lot.quantity_on_hand)
            )
            # every reserved unit belongs to an allocation of an order that still holds stock
            allocation_mismatch = session.scalar(
                text(
                    "SELECT count(*) FROM lots l LEFT JOIN ("
                    " SELECT a.lot_id, sum(a.quantity) AS q FROM lot_allocations a"
                    " JOIN order_items i ON i.id = a.order_item_id"
                    " JOIN orders o ON o.id = i.order_id"
                    " WHERE o.status IN ('pending', 'paid') GROUP BY a.lot_id) s"
                    " ON s.lot_id = l.id WHERE coalesce(s.q, 0) <> l.quantity_reserved"
                )
            )
            orders = session.scalar(select(func.count()).select_from(Order))
            created_audited = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "order.created")
            )
            started = time.perf_counter()
            unsealed = seal(session)  # what the sealer had not reached yet
            seal_seconds = time.perf_counter() - started
            started = time.perf_counter()
            chain = verify_chain(session)
            verify_seconds = time.perf_counter() - started
            session.commit()
    finally:
        engine.dispose()
    return {
        "lots_disagreeing_with_ledger": [str(x) for x in disagreeing[:20]],
        "lots_disagreeing_count": len(disagreeing),
        "lots_reserved_over_on_hand": over_reserved,
        "lots_reserved_not_matching_allocations": allocation_mismatch,
        "orders_in_database": orders,
        "order_created_audit_rows": created_audited,
        "audit_chain_ok": chain.ok,
        "audit_rows_checked": chain.rows_checked,
        "audit_chain_break": None if chain.ok else chain.first_break.__dict__,
        "audit_verify_seconds": round(verify_seconds, 2),
        "audit_rows_sealed_after_the_load": unsealed,
        "audit_final_seal_seconds": round(seal_seconds, 2),
    }


# -- optional profile of the API workers ------------------------------------------------------


@contextlib.contextmanager
def profiled(py_spy: str | None, gil: bool, api: ApiStack, seconds: float, out_dir: Path) -> Any:
    """With --py-spy: `py-spy record --format raw` of every API worker during the phase.

    Without --py-spy-gil it samples every thread that is not idle (time waiting for PostgreSQL
    shows as psycopg's `wait`); with it, only the thread holding the GIL (where the CPU goes).
    """
    if not py_spy:
        yield None
        return
    runs = []
    for pid in api.worker_pids():
        output = out_dir / f"py-spy-{pid}.txt"
        argv = [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            *(["--gil"] if gil else []),
        ]
        runs.append(
            (output, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        )
    summary: dict[str, Any] = {}
    try:
        yield summary
    except BaseException:
        for _, process in runs:
            process.kill()
            process.wait()
        raise
    for _, process in runs:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    summary.update(summarise_profile([path for path, _ in runs if path.exists()]))


def summarise_profile(paths: list[Path], top: int = 40) -> dict[str, Any]:
    """Inclusive share of samples per function, from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [
                f.split(" (")[0] + " " + f.split("(")[-1].split(":")[0].rsplit("/", 1)[-1]
                for f in stack.split(";")
            ]
            for name in set(frames):
                inclusive[name] += n
            leaf[frames[-1]] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "inclusive_percent": {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)},
        "self_percent": {k: round(100 * v / total, 1) for k, v in leaf.most_common(top // 2)},
    }


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.orders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--lots", type=int, default=100_000)
    parser.add_argument("--doctors", type=int, default=20)
    parser.add_argument("--patients", type=int, default=5, help="patients per doctor")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open loop, orders/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    parser.add_argument(
        "--connections",
        type=int,
        default=256,
        help="open loop: concurrent senders, one keep-alive connection each",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=120.0,
        help="open loop: how long to wait for the answers after the last send",
    )
    parser.add_argument("--clients", type=int, default=16, help="saturation: closed-loop clients")
    parser.add_argument("--serial-seconds", type=float, default=10.0)
    parser.add_argument(
        "--below-capacity",
        type=float,
        default=0.6,
        help="last phase: open loop at this fraction of the saturation rate (0 to skip)",
    )
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=0.05,
        help="seconds between pg_stat_activity samples",
    )
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument(
        "--py-spy",
        default=None,
        help="path to a py-spy binary: profile the API workers during saturation"
        " (perturbs the measurement; for exploration)",
    )
    parser.add_argument(
        "--py-spy-gil", action="store_true", help="with --py-spy: only samples holding the GIL"
    )
    parser.add_argument("--output", type=Path, default=None, help="results JSON file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    results = results_header("orders", args)
    log(
        f"load average {results['machine']['load_average_at_start']}, busy processes:"
        f" {results['machine']['busy_processes_at_start']}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    db = start_database(stack, workdir)
    results["postgres"] = {"embedded": db.embedded, **server_facts(db.server)}
    log(f"PostgreSQL {results['postgres']['version'].split(' on ')[0]}")

    results["pgbench"] = baseline(
        db,
        scale=args.pgbench_scale,
        clients=8,
        threads=2,
        seconds=args.pgbench_seconds,
        select_only=False,
    )
    admin_execute(db.server, f"DROP DATABASE {db.pgbench_name}")  # keep its autovacuum out

    log("applying the migrations")
    migrate(db.owner)
    results["seed"] = seed_catalog(db, products=args.products, lots=args.lots)
    log(f"creating {args.doctors} doctors with {args.patients} patients each")
    doctors = create_doctors(db.app, doctors=args.doctors, patients_each=args.patients)
    products = product_ids(db.app)

    api = start_api(stack, db, workdir, results, workers=args.workers, audit_sealer=True)
    sign_in(api.issuer, doctors)
    results["api"] = {
        "server": "portal serve (uvicorn workers, SO_REUSEPORT)",
        "workers": args.workers,
        "database_pool_size": int(os.environ.get("DATABASE_POOL_SIZE", "10")),
        "token": "JWT" if doctors[0].token.count(".") == 2 else "opaque",
        "doctors": len(doctors),
        "patients": sum(len(d.patients) for d in doctors),
    }
    return measure(args, results, db, api, doctors, products, workdir)


def measure(
    args: argparse.Namespace,
    results: dict[str, Any],
    db: Database,
    api: ApiStack,
    doctors: list[Doctor],
    products: list[str],
    workdir: Path,
) -> dict[str, Any]:
    meter = CpuMeter(
        groups={
            "load_generator": os.getpid(),
            "api": api.api_pid,
            "postgres": db.postmaster_pid,
            "identity_provider": api.identity_provider_pid,
            "audit_sealer": api.audit_sealer_pid,
        },
        alone=frozenset({"load_generator"}),  # its children are the API and the provider
    )
    phases = Phases(
        api.base_url, OrderMaker(doctors, products, seed=1), meter, db.owner, args.sample_interval
    )

    log(f"warm-up: {4 * len(doctors)} orders from 4 clients")
    phases.run(
        "warm-up",
        {"mode": "closed loop", "clients": 4},
        lambda begin: closed_loop(
            api.base_url,
            phases.maker,
            clients=4,
            seconds=30,
            max_requests=4 * len(doctors),
            begin=begin,
        ),
    )

    log("serial: one client")
    phases.run(
        "serial",
        {"mode": "closed loop", "clients": 1},
        lambda begin: closed_loop(
            api.base_url,
            phases.maker,
            clients=1,
            seconds=args.serial_seconds,
            max_requests=10**6,
            begin=begin,
        ),
    )

    def open_loop_phase(name: str, rate: float) -> None:
        log(f"{name}: {rate:g} orders/s for {args.seconds:g} s")
        phases.run(
            name,
            {"mode": "open loop", "rate": rate},
            lambda begin: open_loop(
                api.base_url,
                phases.maker,
                rate=rate,
                seconds=args.seconds,
                connections=args.connections,
                drain_seconds=args.drain_seconds,
                begin=begin,
            ),
        )

    open_loop_phase("open loop", args.rate)

    log(f"saturation: {args.clients} clients for {args.seconds:g} s")
    with profiled(args.py_spy, args.py_spy_gil, api, args.seconds, workdir) as profile:
        saturation = phases.run(
            "saturation",
            {"mode": "closed loop", "clients": args.clients},
            lambda begin: closed_loop(
                api.base_url,
                phases.maker,
                clients=args.clients,
                seconds=args.seconds,
                max_requests=10**6,
                begin=begin,
            ),
        )
    if profile is not None:
        results["profile"] = profile

    if args.below_capacity > 0:
        open_loop_phase(
            "open loop below capacity", round(saturation["orders_per_s"] * args.below_capacity)
        )
    results["phases"] = phases.results
    results["api"]["identity_provider_userinfo_calls"] = api.userinfo_calls()

    log("tracing one order's SQL in-process")
    results["trace"] = trace_orders(db.app, doctors, products)
    log(f"  {results['trace']['round_trips_per_order']} round trips per order")
    log("integrity: ledger, counters, allocations, audit chain")
    check = integrity(db.app)
    check["created_201_responses"] = phases.created
    check["orders_expected"] = phases.created + results["trace"]["orders"]
    check["ok"] = (
        check["lots_disagreeing_count"] == 0
        and check["lots_reserved_over_on_hand"] == 0
        and check["lots_reserved_not_matching_allocations"] == 0
        and check["audit_chain_ok"]
        and check["order_created_audit_rows"] == check["orders_in_database"]
    )
    results["integrity"] = check
    log(f"  {'ok' if check['ok'] else 'FAILED'}: {check}")

    tpcb = results["pgbench"]["tpcb"]["tps"]
    target = results["phases"]["open loop"]
    results["ratios"] = {
        "saturation_orders_per_s_per_tpcb_tps": ratio(saturation["orders_per_s"], tpcb),
        "open_loop_orders_per_s_per_tpcb_tps": ratio(target["orders_per_s"], tpcb),
        "serial_orders_per_s_per_tpcb_tps": ratio(
            results["phases"]["serial"]["orders_per_s"], tpcb
        ),
    }
    results["targets"] = {
        "open_loop_rate": args.rate,
        "open_loop_p95_ms": target["latency"].get("p95_ms"),
        "p95_target_ms": TARGET_P95_MS,
        "p95_met": args.rate >= TARGET_RATE
        and (target["latency"].get("p95_ms") or float("inf")) <= TARGET_P95_MS
        and target["statuses"]["other"] == 0,
        "saturation_fraction_of_tpcb": results["ratios"]["saturation_orders_per_s_per_tpcb_tps"],
        "saturation_target_fraction": TARGET_TPCB_FRACTION,
        "saturation_met": (results["ratios"]["saturation_orders_per_s_per_tpcb_tps"] or 0)
        >= TARGET_TPCB_FRACTION,
    }
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["ok"] = True
    return results


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def markdown(results: dict[str, Any]) -> str:
    m, pg, base = results["machine"], results["postgres"], results["pgbench"]
    phases, ratios, targets = results["phases"], results["ratios"], results["targets"]
    check, trace = results["integrity"], results["trace"]
    tpcb = base["tpcb"]
    out = [
        f"## Orders benchmark, {results['started_at']}",
        "",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB; load generator,"
        f" API and PostgreSQL share them. Load average at start {m['load_average_at_start']};"
        f" busy processes at start: "
        + (
            ", ".join(f"{p['name']} {p['cpu_percent']:.0f}%" for p in m["busy_processes_at_start"])
            or "none"
        )
        + ".",
        f"- PostgreSQL: {pg['version'].split(' on ')[0]}"
        f" ({'embedded, fresh' if pg['embedded'] else 'BENCH_DATABASE_URL'});"
        f" shared_buffers {pg['shared_buffers']}, synchronous_commit {pg['synchronous_commit']}.",
        f"- API: portal serve, {results['api']['workers']} worker(s), pool"
        f" {results['api']['database_pool_size']} per worker, {results['api']['token']} tokens;"
        f" {results['api']['doctors']} doctors, {results['api']['patients']} patients;"
        f" {results['api']['identity_provider_userinfo_calls']} userinfo calls in the run.",
        f"- Code: {results['code']['commit']}"
        + (
            f" with uncommitted changes to {', '.join(results['code']['uncommitted_changes'])}"
            if results["code"]["uncommitted_changes"]
            else ""
        )
        + ".",
        f"- pgbench TPC-B-like, scale {base['scale']}, {base['clients']} clients,"
        f" {base['seconds']} s: **{tpcb['tps']:,.0f} tps**, {tpcb['latency_avg_ms']} ms"
        f" (cores: postgres {tpcb['cpu_cores_used'].get('postgres', '-')}, pgbench"
        f" {tpcb['cpu_cores_used']['pgbench']}, other {tpcb['cpu_cores_used']['other']}).",
        "",
        "| phase | load | requests | 201 / 409 / other | orders/s | p50 | p95 | p99 | max"
        " | cores: API / PG / client / sealer / other | audit lock held / waiters |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, r in phases.items():  # the audit lock is now the sealer's (held per seal)
        lat, cpu, s, w = r["latency"], r["cpu_cores_used"], r["statuses"], r["database_sessions"]
        load = (
            f"{r['rate']:g}/s offered, {r['achieved_rate_per_s']}/s sent"
            if r["mode"] == "open loop"
            else f"{r['clients']} clients"
        )
        out.append(
            f"| {name} | {load} | {r['requests']} | {s['201']} / {s['409']} / {s['other']}"
            f" | {r['orders_per_s']} | {lat.get('p50_ms')} ms | {lat.get('p95_ms')} ms"
            f" | {lat.get('p99_ms')} ms | {lat.get('max_ms')} ms | {cpu['api']}"
            f" / {cpu.get('postgres', '-')} / {cpu['load_generator']}"
            f" / {cpu.get('audit_sealer', '-')} / {cpu['other']}"
            f" | {w['audit_lock_held_fraction']:.0%} / {w['mean_audit_lock_waiters']} |"
        )
    out += ["", "Open-loop latency is measured from each request's scheduled send time."]
    for name, r in phases.items():
        if r["mode"] == "open loop":
            out.append(
                f"- {name}: largest backlog {r['max_backlog']} requests waiting for one of"
                f" {r['connections']} connections, {r['unanswered']} unanswered"
                f" {results['parameters']['drain_seconds']:g} s after the last send; dispatcher"
                f" late p99 {r['dispatcher_late_ms']['p99']} ms."
            )
    out.append("")
    for name, r in phases.items():
        foreign = [f"{p['name']} {p['cpu_percent']:.0f}%" for p in r["busy_processes"]
                   if not p["ours"]]  # fmt: skip
        out.append(f"- other busy processes during {name}: {', '.join(foreign) or 'none'}")
    out += [
        "",
        f"- saturation orders/s / pgbench TPC-B tps:"
        f" **{ratios['saturation_orders_per_s_per_tpcb_tps']}** (target >="
        f" {targets['saturation_target_fraction']}: {verdict(targets['saturation_met'])})",
        f"- p95 at {targets['open_loop_rate']:g} orders/s: **{targets['open_loop_p95_ms']} ms**"
        f" (target <= {targets['p95_target_ms']:g} ms: {verdict(targets['p95_met'])})",
        f"- one order (3 items), traced in-process without concurrency:"
        f" {trace['round_trips_per_order']} round trips, {trace['median_total_ms']} ms"
        f" ({trace['median_db_ms']} ms waiting for PostgreSQL,"
        f" commit {trace['median_commit_ms']} ms);"
        f" the audit lock is held for {trace['median_audit_lock_to_commit_ms']} ms"
        f" ({trace['statements_after_audit_lock']} statements, then COMMIT).",
        f"- integrity: {'ok' if check['ok'] else 'FAILED'} — lots disagreeing with the ledger"
        f" {check['lots_disagreeing_count']}, reserved > on hand"
        f" {check['lots_reserved_over_on_hand']}, reserved != allocations"
        f" {check['lots_reserved_not_matching_allocations']}, audit chain"
        f" {'ok' if check['audit_chain_ok'] else 'BROKEN'} ({check['audit_rows_checked']} rows);"
        f" {check['orders_in_database']} orders in the database,"
        f" {check['created_201_responses']} 201s + {trace['orders']} traced.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, stack)
    except KeyboardInterrupt:
        log("interrupted: everything this run started has been stopped")
        return 130
    output = write_results("orders", results, args.output)
    print(markdown(results))
    log(f"raw results: {output}")
    return 0 if results["integrity"]["ok"] else 1


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    sys.exit(main())
