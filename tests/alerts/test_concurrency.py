"""Two sweeps of one topic at once open a condition once and queue one message per channel:
the topic's lock serialises them, and the partial unique index holds even without the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from app import locks
from app.alerts.flows import sync_alerts
from app.alerts.service import AlertSync, Condition
from app.db import make_engine
from app.models import Alert, OutboxMessage
from app.models.status import AlertTopic, StaffRole
from tests.fixtures.alerts import staff_member, subscribe
from tests.fixtures.database import TestDatabase

LOW = Condition("low-stock:race", "Low stock: 1 sellable, par 5: RACE-1 Saline")


@pytest.fixture
def engine(fresh_db: TestDatabase) -> Iterator[Engine]:
    engine = make_engine(fresh_db.app_url, pool_size=3)
    with Session(engine) as session:
        _, actor = staff_member(session, StaffRole.ADMIN)
        subscribe(session, actor, AlertTopic.STOCK, sms_to="+15550100123")
    yield engine
    engine.dispose()


def backend_pid(session: Session) -> int:
    return int(session.execute(select(func.pg_backend_pid())).scalar_one())


def wait_until_blocked(engine: Engine, pid: int) -> None:
    """Until the backend `pid` waits for a lock (a row's, a transaction's or an advisory one)."""
    deadline = time.monotonic() + 15
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar()
            if waiting == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


def race(engine: Engine) -> tuple[AlertSync, AlertSync]:
    """Sweep A syncs and holds its transaction open; sweep B starts, must wait, and finishes
    after A commits."""
    results: dict[str, AlertSync] = {}
    failures: list[BaseException] = []
    with Session(engine) as first:
        results["a"] = sync_alerts(first, AlertTopic.STOCK, [LOW])
        second = Session(engine)
        pid = backend_pid(second)

        def sweep_b() -> None:
            try:
                results["b"] = sync_alerts(second, AlertTopic.STOCK, [LOW])
                second.commit()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
            finally:
                second.close()

        thread = threading.Thread(target=sweep_b)
        thread.start()
        wait_until_blocked(engine, pid)
        first.commit()
    thread.join(timeout=15)
    assert not thread.is_alive() and not failures, failures
    return results["a"], results["b"]


def stored(engine: Engine) -> tuple[int, list[str]]:
    with Session(engine) as session:
        alerts = session.scalar(select(func.count()).select_from(Alert))
        messages = session.scalars(
            select(OutboxMessage.topic).where(OutboxMessage.dedupe_key.like("%alerts-opened-%"))
        ).all()
    return int(alerts or 0), sorted(messages)


def test_two_sweeps_at_once_open_one_alert_and_queue_one_message_per_channel(
    engine: Engine,
) -> None:
    a, b = race(engine)

    assert (a.opened, a.notifications) == (1, 2)
    assert (b.opened, b.still_open, b.notifications) == (0, 1, 0)
    assert stored(engine) == (1, ["notification.email", "notification.sms"])


def test_without_the_topic_lock_the_partial_unique_index_still_keeps_one_open_alert(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the topic lock is switched off, so sweep B reads no open alert and
    tries to insert one; it waits on A's uncommitted row and then gives way."""
    monkeypatch.setattr(locks, "alert_topic", lambda session, topic: None)

    a, b = race(engine)

    assert (a.opened, b.opened, b.still_open, b.notifications) == (1, 0, 1, 0)
    assert stored(engine) == (1, ["notification.email", "notification.sms"])
