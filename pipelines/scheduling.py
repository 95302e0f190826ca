"""When the schedules and sensors run on their own: by default in development and production
(Dagster owns what is scheduled: an unpaid order must expire without anyone clicking), never
under test. Frequent jobs skip a tick while their previous run is still queued or running, so a
slow run never piles up a queue behind it."""

from collections.abc import Callable

import dagster as dg

from app.config import Settings, get_settings

_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def schedule_status(settings: Settings | None = None) -> dg.DefaultScheduleStatus:
    settings = settings or get_settings()
    if settings.environment == "test":
        return dg.DefaultScheduleStatus.STOPPED
    return dg.DefaultScheduleStatus.RUNNING


def sensor_status(settings: Settings | None = None) -> dg.DefaultSensorStatus:
    settings = settings or get_settings()
    if settings.environment == "test":
        return dg.DefaultSensorStatus.STOPPED
    return dg.DefaultSensorStatus.RUNNING


def unless_running(job_name: str) -> Callable[[dg.ScheduleEvaluationContext], bool]:
    """A schedule's `should_execute`: no new run while one of `job_name` is unfinished."""

    def should_execute(context: dg.ScheduleEvaluationContext) -> bool:
        unfinished = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=job_name, statuses=_UNFINISHED), limit=1
        )
        return not unfinished

    return should_execute
