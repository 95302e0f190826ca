"""`app.worker` called in-process, as a scheduler (Dagster) calls it: one poll does what is due on
its schedule, and the registry delivers every topic the portal queues."""

from __future__ import annotations

from pathlib import Path

from app.config import get_settings
from app.db import make_engine
from app.integrations.stripe.refunds import REFUND_TOPIC
from app.notifications.service import EMAIL_TOPIC, SMS_TOPIC
from app.worker import HANDLERS, Schedule, run_once, worker_sessions
from tests.fixtures.database import TestDatabase


def test_the_registry_delivers_refunds_emails_and_sms() -> None:
    assert set(HANDLERS) == {REFUND_TOPIC, EMAIL_TOPIC, SMS_TOPIC}


def test_a_poll_runs_the_periodic_jobs_only_when_due(
    fresh_db: TestDatabase, tmp_path: Path
) -> None:
    settings = get_settings().model_copy(update={"audit_anchor_dir": tmp_path})
    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        sessions = worker_sessions(engine)
        schedule = Schedule()

        first = run_once(sessions, schedule, settings=settings)
        assert first.housekeeping is not None and first.anchor_failure is None
        assert (first.outbox.delivered, first.outbox.retried, first.outbox.dead) == (0, 0, 0)
        assert schedule.next_housekeeping > 0 and schedule.next_anchor > 0

        again = run_once(sessions, schedule, settings=settings)
        assert again.housekeeping is None  # a minute has not passed
        assert not again.busy
    finally:
        engine.dispose()
