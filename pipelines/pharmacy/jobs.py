"""Deliver due prescription submissions (sensor, every 30 s when something is due) and poll the
pharmacies' statuses (schedule, every 2 minutes): the same flows as `portal pharmacy drain`."""

import dagster as dg
from sqlalchemy.orm import Session, sessionmaker

from app.models.base import utcnow
from app.pharmacy import flows, service
from pipelines.resources import PortalDatabase
from pipelines.scheduling import schedule_status, sensor_status, unless_running


def due_submissions(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        return service.due_count(session, now=utcnow())


def delivery_wanted(sessions: sessionmaker[Session]) -> int:
    """Submissions due, plus dead letters whose alert is not open yet (a delivery run opens
    it): held items are announced within a tick even when nothing else is due."""
    with sessions.begin() as session:
        return service.due_count(session, now=utcnow()) + service.unalerted_dead_letters(session)


@dg.op(description="Send every due submission to its pharmacy; retries and dead letters.")
def deliver_pharmacy_submissions(context: dg.OpExecutionContext, database: PortalDatabase) -> int:
    sessions = database.sessions()
    delivered = retried = dead = claimed = 0
    while True:  # until nothing due is left (retries scheduled later wait for a later tick)
        report = flows.deliver_due(sessions)
        claimed += report.claimed
        delivered += report.delivered
        retried += report.retried
        dead += report.dead_lettered
        if not report.claimed or not due_submissions(sessions):
            break
    context.add_output_metadata(
        {"claimed": claimed, "delivered": delivered, "retried": retried, "dead_lettered": dead}
    )
    return delivered


@dg.job(description="Sends due prescription submissions to their pharmacies.")
def deliver_pharmacy_submissions_job() -> None:
    deliver_pharmacy_submissions()


@dg.sensor(
    job=deliver_pharmacy_submissions_job,
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="Runs delivery when prescription submissions are due (checked every 30 s).",
)
def pharmacy_submissions_due(
    context: dg.SensorEvaluationContext, database: PortalDatabase
) -> dg.SensorResult:
    due = delivery_wanted(database.sessions())
    if not due:
        return dg.SensorResult(skip_reason="no prescription submission is due")
    unfinished = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=deliver_pharmacy_submissions_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if unfinished:
        return dg.SensorResult(skip_reason=f"{due} due; the previous delivery is still running")
    return dg.SensorResult(run_requests=[dg.RunRequest(tags={"due": str(due)})])


@dg.op(description="Ask the pharmacies about what they hold; record changes and dispenses.")
def poll_pharmacy_statuses(context: dg.OpExecutionContext, database: PortalDatabase) -> int:
    report = flows.poll_statuses(database.sessions())
    context.add_output_metadata(
        {"polled": report.polled, "changed": report.changed, "cancels_sent": report.cancels_sent}
    )
    return report.changed


@dg.job(description="Polls the pharmacies for the status of submitted prescriptions.")
def poll_pharmacy_statuses_job() -> None:
    poll_pharmacy_statuses()


poll_pharmacy_statuses_schedule = dg.ScheduleDefinition(
    name="poll_pharmacy_statuses_every_2_minutes",
    job=poll_pharmacy_statuses_job,
    cron_schedule="*/2 * * * *",
    default_status=schedule_status(),
    should_execute=unless_running("poll_pharmacy_statuses_job"),
)

defs = dg.Definitions(
    jobs=[deliver_pharmacy_submissions_job, poll_pharmacy_statuses_job],
    schedules=[poll_pharmacy_statuses_schedule],
    sensors=[pharmacy_submissions_due],
)
