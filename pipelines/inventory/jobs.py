"""Low stock and expiry: the core's alert sweep (`app.inventory.flows.check_stock_alerts`) every
15 minutes. The sweep opens an alert when a condition starts (its subscribers are e-mailed, and
texted where they have a phone, through the outbox), nothing while it persists, and clears it
when it ends."""

import dagster as dg

from app.actor import Actor
from app.inventory.flows import check_stock_alerts
from pipelines.resources import OutboxNotifier, PortalDatabase
from pipelines.scheduling import schedule_status, unless_running

STOCK_ALERTS_ACTOR = Actor.system("stock-alerts")


@dg.op(description="Open and clear the stock alerts to match stock and expiry today.")
def sweep_stock_alerts(
    context: dg.OpExecutionContext, database: PortalDatabase, notifier: OutboxNotifier
) -> dict[str, int]:
    sessions = database.sessions()
    with sessions() as session, session.begin():
        result = check_stock_alerts(session, STOCK_ALERTS_ACTOR)
    with sessions() as session:
        waiting = notifier.waiting(session)
    counts = {
        "opened": result.opened,
        "cleared": result.cleared,
        "still_open": result.still_open,
        "notifications_queued": result.notifications,
    }
    context.add_output_metadata({**counts, "outbox_messages_waiting": waiting})
    return counts


@dg.job(description="Low stock, lots expiring soon, products whose only stock is expired.")
def stock_alerts_job() -> None:
    sweep_stock_alerts()


stock_alerts_schedule = dg.ScheduleDefinition(
    name="stock_alerts_every_15_minutes",
    job=stock_alerts_job,
    cron_schedule="*/15 * * * *",
    default_status=schedule_status(),
    should_execute=unless_running("stock_alerts_job"),
)

defs = dg.Definitions(jobs=[stock_alerts_job], schedules=[stock_alerts_schedule])
