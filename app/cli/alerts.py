"""`portal alerts`: alerts to staff."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from app.cli.common import console, database_urls

commands = typer.Typer(help="Alerts to staff", no_args_is_help=True)
LISTED = 50  # lines printed per kind; the rest are counted


@commands.command("check")
def alerts_check(
    today: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Check as of this day (default: today, UTC)"),
    ] = None,
) -> None:
    """Run the stock sweep once: open an alert for each new low-stock product, lot expiring
    within STOCK_EXPIRY_WARNING_DAYS and product holding only expired stock (its subscribers
    are e-mailed through the outbox, which the worker delivers), clear those that ended."""
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.alerts.service import open_alerts
    from app.db import make_engine
    from app.inventory.flows import check_stock_alerts
    from app.models.status import AlertTopic

    engine = make_engine(database_urls().app, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            result = check_stock_alerts(
                session,
                Actor.system("cli:alerts-check"),
                today=today.date() if today else None,
            )
            new = set(result.opened_keys)
            now_open = [(a.key in new, a.summary) for a in open_alerts(session, AlertTopic.STOCK)]
    finally:
        engine.dispose()
    console.print(
        f"stock alerts: {result.opened} opened, {result.cleared} cleared,"
        f" {result.still_open} still open; {result.notifications} messages queued"
    )
    _list("opened", [summary for opened, summary in now_open if opened])
    _list("cleared", list(result.cleared_keys))
    _list("still open", [summary for opened, summary in now_open if not opened])


def _list(label: str, lines: list[str]) -> None:
    # Product names are text staff typed: printed as they are, never read as rich markup.
    for line in lines[:LISTED]:
        console.print(f"  {label}: {line}", markup=False, highlight=False)
    if len(lines) > LISTED:
        console.print(f"  ... and {len(lines) - LISTED} more {label} (GET /api/v1/alerts)")
