"""Serving the API: `portal serve` runs N worker processes that each listen on the same address.

Each worker binds its own socket with SO_REUSEPORT, so the kernel spreads new connections evenly
across the workers. (`uvicorn --workers N` shares one listening socket instead; with long-lived
keep-alive connections, as from a load balancer, one worker can end up with most of them and
become the bottleneck while the others idle.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

import uvicorn

from app.config import get_settings
from app.logs import uvicorn_log_config
from app.models.status import LogSource
from app.system_logs.handler import install as install_system_log


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_one(host: str, port: int, *, access_log: bool, app: str = "app.main:create_app") -> None:
    """One worker process: the API (`app`, an application factory) on its own SO_REUSEPORT
    socket, until SIGTERM or SIGINT."""
    # The client address decides rate limits and is audited: forwarded headers are believed
    # only from the proxies FORWARDED_ALLOW_IPS names (uvicorn alone trusts loopback).
    trusted_proxies = get_settings().forwarded_allow_ips
    config = uvicorn.Config(
        app,
        factory=True,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=trusted_proxies or None,
        access_log=access_log,
        log_level="info",
        log_config=uvicorn_log_config(),  # every handler redacts PHI (app/logs.py)
    )
    # After uvicorn's logging set-up (which replaces the root's handlers): warnings and errors
    # also go to the system log.
    install_system_log(LogSource.API)
    server = uvicorn.Server(config)
    server.run(sockets=[listening_socket(host, port)])


def serve(host: str, port: int, *, workers: int, access_log: bool) -> int:
    """Run `workers` worker processes; a signal to this one stops them all. A worker that dies
    is restarted (after a second, so a worker that cannot start does not spin)."""
    if workers == 1:
        serve_one(host, port, access_log=access_log)
        return 0
    argv = [sys.executable, "-m", "app.cli", "serve", "--host", host, "--port", str(port)]
    argv += ["--workers", "1", "--access-log" if access_log else "--no-access-log"]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=os.environ.copy())  # noqa: S603 (our own command)

    children = [start() for _ in range(workers)]
    try:
        while not stopping:
            for i, child in enumerate(children):
                if child.poll() is not None and not stopping:
                    time.sleep(1.0)
                    children[i] = start()
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
