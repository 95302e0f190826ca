"""`app.worker` called in-process: one poll does what is due on its schedule, the registry
delivers every topic the portal queues, and scheduled business operations are left to Dagster."""

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


def test_a_poll_leaves_overdue_orders_to_the_dagster_schedule(
    fresh_db: TestDatabase, tmp_path: Path
) -> None:
    """Expiring unpaid orders is scheduled by Dagster (pipelines/orders), not by the worker."""
    import psycopg

    from tests.fixtures.pipelines import seed_demo_data

    seed_demo_data(fresh_db)
    with psycopg.connect(fresh_db.owner_url) as conn:
        conn.execute("UPDATE orders SET expires_at = now() - interval '1 hour'")
    settings = get_settings().model_copy(update={"audit_anchor_dir": tmp_path})
    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        poll = run_once(worker_sessions(engine), Schedule(), settings=settings)
    finally:
        engine.dispose()
    assert poll.housekeeping is not None  # the rest of its housekeeping ran
    with psycopg.connect(fresh_db.owner_url) as conn:
        pending = conn.execute("SELECT count(*) FROM orders WHERE status = 'pending'").fetchone()
    assert pending is not None and pending[0] >= 1
