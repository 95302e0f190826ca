"""The lake export as assets: each mart of `analytics` to Parquet (pipelines/lake/export.py).

Marts with a date are exported by month (a monthly partition = `<mart>/month=YYYY-MM/`; a
backfill re-exports any range of months, and each re-export replaces its month whole); the
others (dimensions and as-of snapshots) as a whole to `<mart>/current/`. A schedule re-exports
yesterday's month and the snapshots every night after the dbt build.
"""

from datetime import timedelta

import dagster as dg

from pipelines.lake.export import export_mart
from pipelines.resources import LakeResource, PortalDatabase
from pipelines.scheduling import schedule_status

# mart -> the date column that puts a row in a month (None: exported whole, to `current/`).
LAKE_MARTS: dict[str, str | None] = {
    "fct_orders": "created_date",
    "fct_order_items": "order_created_date",
    "fct_payments": "created_at",
    "fct_revenue_daily": "revenue_date",
    "fct_orders_daily": "order_date",
    "fct_monthly_metrics": "month_start",
    "dim_date": None,
    "dim_products": None,
    "fct_fulfilment_times": None,
    "fct_inventory_velocity": None,
    "fct_lot_expiry": None,
}
MONTHS = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
GROUP = "lake"


def _metadata(rows: int, folder: str) -> dict[str, dg.MetadataValue]:
    return {"rows": dg.MetadataValue.int(rows), "folder": dg.MetadataValue.path(folder)}


def monthly_export(mart: str, date_column: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["lake", mart],
        deps=[dg.AssetKey(["analytics", mart])],
        partitions_def=MONTHS,
        group_name=GROUP,
        kinds={"parquet"},
        description=f"analytics.{mart} as Parquet, one folder per month of `{date_column}`.",
    )
    def export(
        context: dg.AssetExecutionContext, database: PortalDatabase, lake: LakeResource
    ) -> dg.MaterializeResult[None]:
        month = context.partition_key[:7]  # partition keys are the month's first day
        done = export_mart(database.owner, lake.lake(), mart, date_column=date_column, month=month)
        return dg.MaterializeResult(metadata=_metadata(done.rows, done.folder))

    return export


def whole_export(mart: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["lake", mart],
        deps=[dg.AssetKey(["analytics", mart])],
        group_name=GROUP,
        kinds={"parquet"},
        description=f"analytics.{mart} as Parquet, the whole table (`current/`).",
    )
    def export(database: PortalDatabase, lake: LakeResource) -> dg.MaterializeResult[None]:
        done = export_mart(database.owner, lake.lake(), mart)
        return dg.MaterializeResult(metadata=_metadata(done.rows, done.folder))

    return export


monthly_assets = [monthly_export(m, c) for m, c in LAKE_MARTS.items() if c is not None]
whole_assets = [whole_export(m) for m, c in LAKE_MARTS.items() if c is None]

lake_monthly_job = dg.define_asset_job(
    "lake_export_monthly",
    # Partitioned by MONTHS: Dagster infers it from the selected assets.
    selection=dg.AssetSelection.assets(*monthly_assets),
    description="Exports one month of the dated marts to the lake (re-export replaces it).",
)
lake_current_job = dg.define_asset_job(
    "lake_export_current",
    selection=dg.AssetSelection.assets(*whole_assets),
    description="Exports the dimensions and snapshots to the lake, whole.",
)


@dg.schedule(
    job=lake_monthly_job,
    cron_schedule="30 2 * * *",
    default_status=schedule_status(),
    description="Every night: yesterday's month of the dated marts (a closed month gets its "
    "final export on the 1st).",
)
def lake_export_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = context.scheduled_execution_time - timedelta(days=1)
    return dg.RunRequest(partition_key=yesterday.strftime("%Y-%m-01"))


lake_current_nightly = dg.ScheduleDefinition(
    name="lake_export_current_nightly",
    job=lake_current_job,
    cron_schedule="35 2 * * *",
    default_status=schedule_status(),
)

defs = dg.Definitions(
    assets=[*monthly_assets, *whole_assets],
    jobs=[lake_monthly_job, lake_current_job],
    schedules=[lake_export_nightly, lake_current_nightly],
)
