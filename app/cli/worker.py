"""`portal worker`: the worker loop of app/worker.py as a long-lived service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import console, database_urls, stop_on_signals

if TYPE_CHECKING:
    from app.worker import Poll


def worker(
    once: Annotated[bool, typer.Option(help="Deliver what is due, then exit")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls when idle")] = 1.0,
) -> None:
    """Deliver the outbox (refunds, notifications) with retries, seal the audit log into its
    hash chain and anchor its head every AUDIT_ANCHOR_EVERY_SECONDS; every minute prune closed
    rate-limit windows (Dagster expires unpaid orders). Ctrl-C stops it."""
    from app.db import make_engine
    from app.models.status import LogSource
    from app.system_logs.handler import install as install_system_log
    from app.worker import run_forever, run_once, worker_sessions

    install_system_log(LogSource.WORKER)
    engine = make_engine(database_urls().app, pool_size=2)
    sessions = worker_sessions(engine)
    stop_on_signals()
    try:
        if once:
            report(run_once(sessions))
        else:
            run_forever(sessions, interval=interval, on_poll=report)
    except KeyboardInterrupt:
        console.print("worker stopped")
    finally:
        engine.dispose()


def report(poll: Poll) -> None:
    """What a poll did, in the order it did it; nothing for a poll that found no work."""
    kept = poll.housekeeping
    if kept is not None and kept.pruned:
        console.print(f"{kept.pruned} closed rate-limit windows pruned")
    if kept is not None and kept.system_log_pruned:
        console.print(f"{kept.system_log_pruned} system log records past their retention pruned")
    if poll.anchor_failure is not None:  # loud, but deliveries go on
        console.print(f"[red]audit anchor not written: {poll.anchor_failure}[/red]")
    outbox = poll.outbox
    if outbox.delivered or outbox.retried or outbox.dead:
        console.print(
            f"outbox: {outbox.delivered} delivered, {outbox.retried} to retry,"
            f" {outbox.dead} dead-lettered"
        )
