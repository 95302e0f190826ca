"""The schedules and the sensor ask for the runs they should: the dbt build when the source
tables were written to (and not again until they are), the lake export of yesterday's month,
the reconciliation of yesterday."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import psycopg

from pipelines.analytics.models import analytics_sources_changed
from pipelines.definitions import defs
from pipelines.lake.assets import lake_export_nightly
from pipelines.payments.jobs import reconcile_yesterday
from tests.fixtures.database import TestDatabase


def test_the_dbt_sensor_requests_a_build_only_after_the_sources_change(
    pipeline_db: TestDatabase, resources: dict[str, object]
) -> None:
    def evaluate(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            result = analytics_sources_changed(context)
        assert isinstance(result, dg.SensorResult)
        return result

    first = evaluate(None)
    assert len(first.run_requests or []) == 1
    assert not evaluate(first.cursor).run_requests  # nothing written since

    with psycopg.connect(pipeline_db.owner_url) as conn:
        conn.execute("UPDATE products SET description = description WHERE sku = 'B12-1000'")
    # PostgreSQL publishes a session's table statistics when it ends (at most a second later).
    changed = None
    for _ in range(20):
        changed = evaluate(first.cursor)
        if changed.run_requests:
            break
        time.sleep(0.25)
    assert changed is not None and len(changed.run_requests or []) == 1
    assert changed.cursor != first.cursor


def test_the_nightly_lake_export_asks_for_yesterdays_month() -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 1, 2, 30, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        (request,) = lake_export_nightly.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-11-01"  # November's final export, on December 1st


def test_the_nightly_reconciliation_asks_for_yesterday() -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 1, 1, 15, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        (request,) = reconcile_yesterday.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-11-30"
