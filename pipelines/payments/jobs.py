"""Payment reconciliation (`app.payments.reconciliation.reconcile`) against Stripe.

`reconcile_payments_daily` is partitioned by day (UTC): its schedule reconciles yesterday
every night, and a backfill in the UI reconciles any range of days, one run per day.
`reconcile_payments_period` takes a period from the launchpad (`start`, `end`: days, the last
one included; at most the 92 days reconcile accepts). Re-running a period changes nothing more:
the core's reconciliation is idempotent.
"""

from datetime import UTC, date, datetime, time, timedelta

import dagster as dg

from app.actor import Actor
from app.payments.reconciliation import reconcile
from pipelines.resources import PortalDatabase, StripeResource
from pipelines.scheduling import schedule_status

RECONCILIATION_ACTOR = Actor.system("reconciliation")
DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def run_reconciliation(
    context: dg.OpExecutionContext,
    database: PortalDatabase,
    stripe: StripeResource,
    start: datetime,
    end: datetime,
) -> dict[str, int]:
    sessions = database.sessions()
    with sessions() as session, session.begin():
        report = reconcile(
            session, RECONCILIATION_ACTOR, start=start, end=end, stripe=stripe.client()
        )
    summary = {
        "intents_examined": report.intents_examined,
        "new": report.new,
        "repaired": report.repaired,
        "cleared": report.cleared,
        "open": report.open,
    }
    context.add_output_metadata(
        {
            **summary,
            "period": f"{start.isoformat()} to {end.isoformat()}",
            "run_id": str(report.run_id),
            "by_kind": dg.MetadataValue.json(report.counts),
            "alerts": dg.MetadataValue.json(report.alerts),
            "disputes_listed": report.disputes_listed,
        }
    )
    return summary


@dg.op(description="Reconcile the PaymentIntents created on the partition's day (UTC).")
def reconcile_day(
    context: dg.OpExecutionContext, database: PortalDatabase, stripe: StripeResource
) -> dict[str, int]:
    day = date.fromisoformat(context.partition_key)
    start = _midnight(day)
    return run_reconciliation(context, database, stripe, start, start + timedelta(days=1))


class Period(dg.Config):
    start: str  # first day, YYYY-MM-DD (UTC)
    end: str  # last day, included


@dg.op(description="Reconcile the PaymentIntents created from `start` to `end` (days, UTC).")
def reconcile_period(
    context: dg.OpExecutionContext,
    config: Period,
    database: PortalDatabase,
    stripe: StripeResource,
) -> dict[str, int]:
    try:
        first, last = date.fromisoformat(config.start), date.fromisoformat(config.end)
    except ValueError as exc:
        raise dg.Failure(description="start and end are days: YYYY-MM-DD") from exc
    if last < first:
        raise dg.Failure(description="end is before start")
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    return run_reconciliation(context, database, stripe, start, end)


@dg.job(partitions_def=DAYS, description="Reconciles one day's payments with Stripe.")
def reconcile_payments_daily() -> None:
    reconcile_day()


@dg.job(description="Reconciles the payments of any period (launchpad: start, end).")
def reconcile_payments_period() -> None:
    reconcile_period()


@dg.schedule(
    job=reconcile_payments_daily,
    name="reconcile_payments_nightly",
    cron_schedule="15 1 * * *",
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Every night: the reconciliation of yesterday (UTC).",
)
def reconcile_yesterday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    # One run per day even if a tick is retried after a failure.
    return dg.RunRequest(run_key=yesterday, partition_key=yesterday)


defs = dg.Definitions(
    jobs=[reconcile_payments_daily, reconcile_payments_period], schedules=[reconcile_yesterday]
)
