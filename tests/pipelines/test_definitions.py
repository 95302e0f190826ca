"""Every Dagster definition loads, and workspace.yaml loads exactly this code location."""

from __future__ import annotations

import runpy
import warnings
from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_yaml_loads_the_pipelines_code_location() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace == {
        "load_from": [
            {"python_module": {"module_name": "pipelines.definitions", "working_directory": "."}}
        ]
    }


def test_every_definition_loads() -> None:
    import pipelines.definitions as module
    from pipelines.definitions import defs

    # What the webserver checks: one Definitions object at the module's top level.
    assert [v for v in vars(module).values() if isinstance(v, dg.Definitions)] == [defs]
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()}
    assert "expire_unpaid_orders_job" in jobs
    schedules = {s.name: s for s in repository.schedule_defs}
    assert schedules["expire_unpaid_orders_every_minute"].cron_schedule == "* * * * *"
    # Tests run with ENVIRONMENT=test: nothing starts on its own there.
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())


def test_schedules_run_by_default_outside_tests() -> None:
    from app.config import Settings
    from pipelines.scheduling import schedule_status

    assert schedule_status(Settings(environment="development")) == dg.DefaultScheduleStatus.RUNNING
    assert schedule_status(Settings(environment="test")) == dg.DefaultScheduleStatus.STOPPED


def test_a_frequent_schedule_skips_its_tick_while_the_previous_run_is_unfinished() -> None:
    from pipelines.orders.jobs import expire_unpaid_orders_job, expire_unpaid_orders_schedule

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        assert len(expire_unpaid_orders_schedule.evaluate_tick(context).run_requests or []) == 1
        run = instance.create_run_for_job(expire_unpaid_orders_job)
        instance.handle_run_event(
            run.run_id,
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value,
                job_name=run.job_name,
            ),
        )
        assert not expire_unpaid_orders_schedule.evaluate_tick(context).run_requests


def test_the_partitioned_jobs_and_their_schedules_use_no_deprecated_dagster_api() -> None:
    """Dagster warns once per place, so each module is run afresh (`runpy`, sys.modules left
    alone) and its schedule ticked with every warning recorded."""
    from datetime import UTC, datetime

    from pipelines.definitions import defs

    with warnings.catch_warnings(record=True) as caught, dg.instance_for_test() as instance:
        warnings.simplefilter("always")
        lake = runpy.run_module("pipelines.lake.assets")
        payments = runpy.run_module("pipelines.payments.jobs")
        for schedule in (lake["lake_export_nightly"], payments["reconcile_yesterday"]):
            context = dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
                repository_def=defs.get_repository_def(),
            )
            assert len(schedule.evaluate_tick(context).run_requests or []) == 1

    deprecations = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning)
        and any(place in w.filename for place in ("/pipelines/", "/dagster/"))
    ]
    assert deprecations == []
    # The monthly export job is still partitioned by month: inferred from its assets.
    assert defs.resolve_job_def("lake_export_monthly").partitions_def == lake["MONTHS"]
