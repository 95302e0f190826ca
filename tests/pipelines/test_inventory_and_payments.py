"""The stock alert sweep and the payment reconciliation jobs run the core's flows on real data:
alerts open once and stay quiet while their condition persists; reconciliation records a run for
the day (partition) or the period (config) it was given, against the local Stripe stand-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.actor import Actor, Role
from app.alerts.service import Channels, replace_subscriptions
from app.db import make_engine
from app.models.status import AlertTopic
from pipelines.inventory.jobs import stock_alerts_job
from pipelines.payments.jobs import reconcile_payments_daily, reconcile_payments_period
from pipelines.resources import StripeResource
from tests.fixtures.database import TestDatabase
from tests.fixtures.stripe import API_KEY, LocalStripe


def _subscribe_the_demo_admin(database: TestDatabase) -> None:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            user_id = session.execute(
                text("SELECT id FROM users WHERE role = 'admin' ORDER BY email LIMIT 1")
            ).scalar_one()
            admin = Actor(subject="admin@demo.clinic", role=Role.ADMIN, user_id=user_id)
            replace_subscriptions(
                session, admin, {AlertTopic.STOCK: Channels(email=True, sms_to=None)}
            )
    finally:
        engine.dispose()


def _metadata(result: dg.ExecuteInProcessResult, step: str) -> dict[str, object]:
    (event,) = [
        e
        for e in result.all_node_events
        if e.step_key == step and e.event_type == dg.DagsterEventType.STEP_OUTPUT
    ]
    data = event.event_specific_data
    assert data is not None
    return (
        {m.label: m.value for m in data.metadata_entries}
        if hasattr(data, "metadata_entries")
        else {k: v.value for k, v in data.metadata.items()}
    )


def test_the_stock_alert_job_opens_alerts_once_and_tells_the_subscribers(
    pipeline_db: TestDatabase, resources: dict[str, object]
) -> None:
    _subscribe_the_demo_admin(pipeline_db)

    first = stock_alerts_job.execute_in_process(resources=resources)
    assert first.success
    opened = first.output_for_node("sweep_stock_alerts")
    assert opened["opened"] > 0  # the demo catalog has low stock and lots expiring soon
    assert opened["notifications_queued"] > 0
    assert _metadata(first, "sweep_stock_alerts")["outbox_messages_waiting"] >= 1

    again = stock_alerts_job.execute_in_process(resources=resources)
    counts = again.output_for_node("sweep_stock_alerts")
    assert counts["opened"] == 0 and counts["notifications_queued"] == 0  # deduplicated
    assert counts["still_open"] == opened["opened"] + opened["still_open"]
    with psycopg.connect(pipeline_db.owner_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM alerts WHERE topic = 'stock' AND cleared_at IS NULL"
        ).fetchone()
    assert row is not None and row[0] == counts["still_open"]


def test_reconciliation_runs_for_a_day_partition_and_for_a_configured_period(
    pipeline_db: TestDatabase, resources: dict[str, object], localstripe: LocalStripe
) -> None:
    stripe = StripeResource(api_key=API_KEY, api_base=localstripe.base)
    with_stripe = {**resources, "stripe": stripe}
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()

    daily = reconcile_payments_daily.execute_in_process(
        resources=with_stripe, partition_key=yesterday.isoformat()
    )
    assert daily.success
    week = {
        "start": (yesterday - timedelta(days=6)).isoformat(),
        "end": datetime.now(UTC).date().isoformat(),
    }
    config = {"ops": {"reconcile_period": {"config": week}}}
    period = reconcile_payments_period.execute_in_process(resources=with_stripe, run_config=config)
    assert period.success
    again = reconcile_payments_period.execute_in_process(resources=with_stripe, run_config=config)
    assert again.output_for_node("reconcile_period")["new"] == 0  # nothing more the second time
    with psycopg.connect(pipeline_db.owner_url) as conn:
        runs = conn.execute(
            "SELECT period_start, period_end - period_start FROM reconciliation_runs"
            " ORDER BY started_at"
        ).fetchall()
    assert [r[1] for r in runs[-3:]] == [timedelta(days=1), timedelta(days=8), timedelta(days=8)]
    assert runs[-3][0].date() == yesterday


def test_a_period_with_bad_days_fails_with_a_plain_reason(
    resources: dict[str, object],
) -> None:
    result = reconcile_payments_period.execute_in_process(
        resources=resources,
        run_config={"ops": {"reconcile_period": {"config": {"start": "2026-13-01", "end": "x"}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "YYYY-MM-DD" in str(failure.event_specific_data)
