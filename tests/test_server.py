"""`portal serve`: worker processes that each listen on the address (SO_REUSEPORT), so the
kernel spreads connections over them, and that all stop with the parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.fixtures.live_api import PRIVATE_PREFIXES, PROJECT_ROOT, free_port, wait_until_up

PORTAL = str(Path(sys.executable).parent / "portal")
CONNECTIONS = 60


def _established(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def test_serve_spreads_connections_over_its_workers_and_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    env.update(ENVIRONMENT="test")
    argv = [PORTAL, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
    clients: list[socket.socket] = []
    try:
        wait_until_up(process, base + "/healthz", log_path)
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
        # Wait until both workers listen (the first one up already answers /healthz).
        deadline = time.monotonic() + 60
        while not all(
            any(c.status == psutil.CONN_LISTEN for c in w.net_connections(kind="tcp"))
            for w in workers
        ):
            assert time.monotonic() < deadline, "a worker never listened"
            time.sleep(0.2)

        for _ in range(CONNECTIONS):  # keep-alive connections, as a load balancer holds them
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            clients.append(client)

        per_worker = [_established(w, port) for w in workers]
        assert sum(per_worker) == CONNECTIONS
        # Spread by the kernel's hash: each worker has a fair share (binomial, 4 sd margin).
        assert all(15 <= n <= CONNECTIONS - 15 for n in per_worker), per_worker
    finally:
        for client in clients:
            client.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    assert process.returncode == 0
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
