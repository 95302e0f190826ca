"""The dbt models as Dagster assets (one per model, lineage from the manifest; dbt's own tests
become asset checks), built hourly and when the portal's source tables change."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)
from sqlalchemy import text

from pipelines.analytics.manifest import ensure_manifest
from pipelines.analytics.quality import data_quality_checks
from pipelines.dbt_project import dbt_environment
from pipelines.resources import PortalDatabase, environment
from pipelines.scheduling import schedule_status, sensor_status

MANIFEST = ensure_manifest()
TRANSLATOR = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(manifest=MANIFEST, dagster_dbt_translator=TRANSLATOR, name="portal_dbt_models")
def portal_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, database: PortalDatabase
) -> Iterator[Any]:
    """`dbt build` of the selected models (and their tests) against the portal's database, as
    the schema owner."""
    with environment(dbt_environment(database.owner)):
        yield from dbt.cli(["build"], context=context).stream()


analytics_build_job = dg.define_asset_job(
    "analytics_build",
    selection=dg.AssetSelection.assets(portal_dbt_models)
    | dg.AssetSelection.checks(data_quality_checks),
    description="dbt build (staging, intermediate, marts, with dbt's tests), then the data"
    " quality suites.",
)

analytics_hourly = dg.ScheduleDefinition(
    name="analytics_build_hourly",
    job=analytics_build_job,
    cron_schedule="0 * * * *",
    default_status=schedule_status(),
)

# The portal's tables the dbt sources read; their write counters say when something changed.
SOURCE_TABLES = (
    "orders",
    "order_items",
    "payments",
    "payment_refunds",
    "products",
    "lots",
    "patients",
    "users",
)
_CHANGES = text(
    "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint"
    " FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = ANY(:tables)"
)


def source_changes(database: PortalDatabase) -> int:
    """A counter of the writes to the source tables (PostgreSQL's statistics: cheap, no scan;
    it restarts from zero with the server, which also reads as a change)."""
    with database.sessions()() as session:
        return int(session.execute(_CHANGES, {"tables": list(SOURCE_TABLES)}).scalar_one())


@dg.sensor(
    job=analytics_build_job,
    minimum_interval_seconds=600,
    default_status=sensor_status(),
    description="Builds the marts when the portal's source tables changed (checked every 10 min).",
)
def analytics_sources_changed(
    context: dg.SensorEvaluationContext, database: PortalDatabase
) -> dg.SensorResult:
    changes = str(source_changes(database))
    if changes == context.cursor:
        return dg.SensorResult(skip_reason="no writes to the source tables", cursor=changes)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"sources-{changes}")], cursor=changes
    )


defs = dg.Definitions(
    assets=[portal_dbt_models],
    jobs=[analytics_build_job],
    schedules=[analytics_hourly],
    sensors=[analytics_sources_changed],
)
