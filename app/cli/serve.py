"""`portal serve`: the API as a deployment runs it."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from app.config import get_settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default API_HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes; 0 = one per CPU", min=0, max=64)
    ] = 0,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Run the API (what a deployment runs): worker processes that each listen on the address,
    so the kernel spreads connections evenly across them."""
    from app.server import serve as run

    settings = get_settings()
    count = workers or len(os.sched_getaffinity(0))
    host = host or settings.api_host
    port = port or settings.api_port
    raise typer.Exit(run(host, port, workers=count, access_log=access_log))
