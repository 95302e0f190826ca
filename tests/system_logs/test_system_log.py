"""The system log: warnings and errors kept for admins, redacted like every log line, listed by
the API to admins only, pruned after the retention. (The API and worker processes' own records
are proven in tests/logs/test_no_phi_in_logs.py, which reads the table after provoking them.)"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import SystemLogEntry
from app.models.status import LogSource
from app.system_logs import service
from app.system_logs.handler import SystemLogHandler, libpq_url
from tests.fixtures.database import TestDatabase

SYSTEM_LOGS = "/api/v1/system-logs"


def test_the_handler_keeps_warnings_and_errors_redacted_on_its_own_connection(
    fresh_db: TestDatabase,
) -> None:
    logger = logging.getLogger(f"app.tests.system_log.{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    handler = SystemLogHandler(fresh_db.app_url, LogSource.WORKER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("routine work, not kept")
        logger.warning("delivery retried for email=zebulon.quixote@example.com name=Zebulon")
        try:
            raise RuntimeError("no patient with e-mail zebulon.quixote@example.com")
        except RuntimeError:
            logger.exception("unhandled error")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    with psycopg.connect(fresh_db.owner_url) as conn:
        rows = conn.execute(
            "SELECT level, source, logger, message, exception FROM system_log ORDER BY id"
        ).fetchall()
    assert [(level, source) for level, source, *_ in rows] == [
        ("WARNING", "worker"),
        ("ERROR", "worker"),
    ]
    assert rows[0][3] == "delivery retried for email=[redacted] name=[redacted]"
    assert rows[1][3] == "unhandled error"
    assert "RuntimeError: no patient with e-mail [redacted]" in rows[1][4]
    assert "zebulon" not in str(rows).lower()
    assert handler.dropped == 0


def test_an_unreachable_database_drops_records_without_stopping_the_process() -> None:
    handler = SystemLogHandler("postgresql://nobody@127.0.0.1:1/none", LogSource.API)
    record = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "boom", None, None)
    handler.handle(record)
    handler.flush()
    handler.close()
    assert handler.dropped == 1


def test_sqlalchemy_urls_are_given_to_libpq_without_the_driver() -> None:
    assert libpq_url("postgresql+psycopg://a@h/db") == "postgresql://a@h/db"
    assert libpq_url("postgresql://a@h/db") == "postgresql://a@h/db"


def _entry(db: Session, level: str, source: str, at: datetime, message: str) -> None:
    db.add(
        SystemLogEntry(created_at=at, level=level, source=source, logger="app.x", message=message)
    )
    db.flush()


def test_admins_list_the_records_newest_first_with_filters(
    db: Session, client: TestClient, admin: dict[str, str], doctor: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    _entry(db, "WARNING", "api", now - timedelta(minutes=3), "slow pharmacy")
    _entry(db, "ERROR", "worker", now - timedelta(minutes=2), "delivery failed")
    _entry(db, "CRITICAL", "pipelines", now - timedelta(minutes=1), "dbt run failed")

    everything = client.get(SYSTEM_LOGS, headers=admin)
    assert everything.status_code == 200, everything.text
    assert [r["message"] for r in everything.json()["items"]][:3] == [
        "dbt run failed",
        "delivery failed",
        "slow pharmacy",
    ]
    errors = client.get(SYSTEM_LOGS, params={"level": "ERROR"}, headers=admin).json()["items"]
    assert {r["message"] for r in errors} >= {"dbt run failed", "delivery failed"}
    assert "slow pharmacy" not in {r["message"] for r in errors}
    worker = client.get(SYSTEM_LOGS, params={"source": "worker"}, headers=admin).json()
    assert [r["message"] for r in worker["items"]] == ["delivery failed"]
    first = client.get(SYSTEM_LOGS, params={"limit": 1}, headers=admin).json()
    second = client.get(
        SYSTEM_LOGS, params={"limit": 1, "cursor": first["next_cursor"]}, headers=admin
    ).json()
    assert [r["message"] for r in first["items"] + second["items"]] == [
        "dbt run failed",
        "delivery failed",
    ]

    refused = client.get(SYSTEM_LOGS, headers=doctor)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    for bad_query in ({"level": "DEBUG"}, {"until": "0.5"}, {"since": "yesterday"}):
        bad = client.get(SYSTEM_LOGS, params=bad_query, headers=admin)
        assert bad.status_code == 422, bad_query
        assert bad.headers["content-type"] == "application/problem+json"
    since = (now - timedelta(minutes=2, seconds=30)).isoformat()
    recent = client.get(SYSTEM_LOGS, params={"since": since}, headers=admin).json()["items"]
    assert [r["message"] for r in recent][:2] == ["dbt run failed", "delivery failed"]
    assert "slow pharmacy" not in {r["message"] for r in recent}


def test_records_past_the_retention_are_pruned(db: Session) -> None:
    now = datetime.now(UTC)
    _entry(db, "ERROR", "api", now - timedelta(days=31), "old")
    _entry(db, "ERROR", "api", now - timedelta(days=29), "recent")
    assert service.prune(db, retention_days=30, now=now) >= 1
    kept = {entry.message for entry in db.query(SystemLogEntry)}
    assert "recent" in kept and "old" not in kept
