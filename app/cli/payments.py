"""`portal payments`: payment reconciliation against Stripe."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

import typer

from app.cli.common import console, database_urls

commands = typer.Typer(help="Payments", no_args_is_help=True)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("expected a date as YYYY-MM-DD") from exc


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@commands.command("reconcile")
def payments_reconcile(
    from_: Annotated[
        str | None,
        typer.Option("--from", help="First day (UTC, YYYY-MM-DD); default: yesterday"),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Last day, included (UTC, YYYY-MM-DD); default: --from"),
    ] = None,
) -> None:
    """Compare the payments of the PaymentIntents created on those days with Stripe's, record
    each disagreement and repair missed webhooks; prints the count per kind."""
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.db import make_engine
    from app.errors import PortalError
    from app.payments.reconciliation import reconcile

    first = _day(from_) if from_ else datetime.now(UTC).date() - timedelta(days=1)
    last = _day(to) if to else first
    if last < first:
        raise typer.BadParameter("--to is before --from", param_hint="--to")
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    engine = make_engine(database_urls().app, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            report = reconcile(session, Actor.system("cli"), start=start, end=end)
    except PortalError as exc:  # a period refused, Stripe unreachable: nothing was written
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2 if exc.status < 500 else 1) from None
    finally:
        engine.dispose()
    console.print(f"Reconciled {first} to {last} (UTC): {report.intents_examined} intents")
    for kind, count in sorted(report.counts.items()):
        console.print(f"  {kind}: {count}")
    if not report.counts:
        console.print("  no exceptions")
    console.print(
        f"{report.new} new, {report.repaired} repaired, {report.cleared} cleared,"
        f" {report.open} open in all"
    )
    if not report.disputes_listed:
        console.print("Disputes could not be listed here; the charges' flags were compared.")
