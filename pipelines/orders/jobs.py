"""Expire unpaid orders: the core's expiry (app/orders/expiry.py) every minute, so a self-order's
reserved stock comes back soon after its SELF_ORDER_PAYMENT_TTL_MINUTES."""

import dagster as dg

from app.orders.expiry import expire_all_unpaid_orders
from pipelines.resources import PortalDatabase
from pipelines.scheduling import schedule_status, unless_running


@dg.op(description="Cancel every pending order past its payment window; release its stock.")
def expire_unpaid_orders(context: dg.OpExecutionContext, database: PortalDatabase) -> int:
    expired = expire_all_unpaid_orders(database.sessions())
    context.add_output_metadata({"expired": expired})
    return expired


@dg.job(description="Cancels unpaid orders past their payment window and releases their stock.")
def expire_unpaid_orders_job() -> None:
    expire_unpaid_orders()


expire_unpaid_orders_schedule = dg.ScheduleDefinition(
    name="expire_unpaid_orders_every_minute",
    job=expire_unpaid_orders_job,
    cron_schedule="* * * * *",
    default_status=schedule_status(),
    should_execute=unless_running("expire_unpaid_orders_job"),
)

defs = dg.Definitions(jobs=[expire_unpaid_orders_job], schedules=[expire_unpaid_orders_schedule])
