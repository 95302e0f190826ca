"""`portal pharmacy`: delivery of prescriptions to pharmacies."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import console, database_urls

commands = typer.Typer(help="Pharmacies", no_args_is_help=True)


@commands.command("drain")
def pharmacy_drain(
    once: Annotated[
        bool, typer.Option("--once", help="One round of delivery and status polls, then stop")
    ] = False,
) -> None:
    """Send every due prescription submission to its pharmacy (retries with backoff, dead
    letters alerted) and poll the pharmacies for what they hold, round after round until
    nothing is due; retries scheduled later are left for the next run (the Dagster sensor)."""
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine
    from app.pharmacy.flows import drain

    engine = make_engine(database_urls().app, pool_size=1)
    try:
        report = drain(sessionmaker(engine, expire_on_commit=False), once=once)
    finally:
        engine.dispose()
    delivery, polls = report.delivery, report.polls
    console.print(
        f"{report.rounds} round(s): {delivery.claimed} sent, {delivery.delivered} delivered,"
        f" {delivery.retried} to retry, {delivery.dead_lettered} dead-lettered,"
        f" {delivery.exchanges} exchanges logged; {polls.polled} polled,"
        f" {polls.changed} changed status, {polls.cancels_sent} cancels sent"
    )
    # The pharmacies' messages can repeat what was sent: counted here, read in the API.
    failures = len(delivery.errors) + len(polls.errors)
    if failures:
        console.print(
            f"{failures} failed call(s); see GET /api/v1/pharmacy-submissions?status=pending"
            " and ?status=dead_letter"
        )
