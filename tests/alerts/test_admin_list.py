"""GET /api/v1/alerts: admins page through alerts newest first, by topic and state; each alert
shown is audited as read; doctors are refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.alerts.flows import sync_alerts
from app.alerts.service import Condition
from app.models.base import utcnow
from app.models.status import AlertTopic
from tests.fixtures.patients import Headers, audit_entries
from tests.fixtures.problems import assert_problem

ALERTS = "/api/v1/alerts"


def listed(client: TestClient, headers: Headers, **params: Any) -> list[dict[str, Any]]:
    response = client.get(ALERTS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def seed(db: Session) -> None:
    """Four stock alerts an hour apart (the second cleared) and one reconciliation alert."""
    start = utcnow() - timedelta(hours=10)
    conditions = [Condition(f"low-stock:p{n}", f"Low stock {n}", {"n": n}) for n in range(4)]
    for n in range(4):
        sync_alerts(db, AlertTopic.STOCK, conditions[: n + 1], now=start + timedelta(hours=n))
    sync_alerts(
        db, AlertTopic.STOCK, [c for c in conditions if c.key != "low-stock:p1"], now=utcnow()
    )
    sync_alerts(db, AlertTopic.RECONCILIATION, [Condition("missed:pi_1", "Missed webhook")])
    db.commit()


def test_admins_list_alerts_newest_first_filtered_by_topic_and_state(
    client: TestClient, db: Session, admin: Headers
) -> None:
    seed(db)

    everything = listed(client, admin)
    assert [a["key"] for a in everything] == [
        "missed:pi_1",
        "low-stock:p3",
        "low-stock:p2",
        "low-stock:p1",
        "low-stock:p0",
    ]
    stock_open = listed(client, admin, topic="stock", state="open")
    assert [a["key"] for a in stock_open] == ["low-stock:p3", "low-stock:p2", "low-stock:p0"]
    (cleared,) = listed(client, admin, state="cleared")
    assert cleared["key"] == "low-stock:p1"
    assert cleared["state"] == "cleared" and cleared["cleared_at"] is not None
    assert cleared["summary"] == "Low stock 1"
    assert cleared["details"] == {"n": 1}
    assert cleared["topic"] == "stock"
    assert [a["key"] for a in listed(client, admin, topic="reconciliation")] == ["missed:pi_1"]
    assert listed(client, admin, topic="pharmacy") == []


def test_pages_follow_the_cursor_without_repeats_or_gaps(
    client: TestClient, db: Session, admin: Headers
) -> None:
    seed(db)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "topic": "stock"}
        if cursor:
            params["cursor"] = cursor
        page = client.get(ALERTS, params=params, headers=admin).json()
        seen += [a["key"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["low-stock:p3", "low-stock:p2", "low-stock:p1", "low-stock:p0"]


def test_each_alert_listed_is_audited_as_read(
    client: TestClient, db: Session, admin: Headers
) -> None:
    seed(db)

    (first,) = listed(client, admin, limit=1)
    db.commit()

    (entry,) = audit_entries(db, first["id"], "alert.read")
    assert entry.actor_subject == "admin-main"
    assert entry.entity_type == "alert"


def test_doctors_and_anonymous_callers_are_refused(
    client: TestClient, doctor: Headers, db: Session
) -> None:
    seed(db)
    assert_problem(client.get(ALERTS, headers=doctor), 403, "/problems/forbidden")
    assert_problem(client.get(ALERTS), 401)


def test_bad_filters_and_cursors_are_client_errors(client: TestClient, admin: Headers) -> None:
    assert_problem(client.get(ALERTS, params={"topic": "billing"}, headers=admin), 422)
    assert_problem(client.get(ALERTS, params={"state": "closed"}, headers=admin), 422)
    assert_problem(client.get(ALERTS, params={"limit": 0}, headers=admin), 422)
    assert_problem(
        client.get(ALERTS, params={"cursor": "not-a-cursor"}, headers=admin),
        400,
        "/problems/invalid-cursor",
    )
