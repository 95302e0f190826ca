"""The reconciliation admin API: admins only; a refused period is a problem and writes nothing;
exceptions listed by kind and state, page by page; an exception resolved once, with its note
kept encrypted and the resolution audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Alert, AuditEntry, ReconciliationException, ReconciliationRun
from app.payments.reconciliation import resolution_note, rotate_resolution_notes
from tests.fixtures.identity import Auth
from tests.fixtures.patients import Headers, second_phi_key
from tests.fixtures.problems import assert_problem
from tests.fixtures.reconciliation import Period, next_whole_second
from tests.fixtures.stripe import CARD, LocalStripe, clear_caches, free_port

BASE = "/api/v1/payments/reconciliation"
RUNS = f"{BASE}/runs"
EXCEPTIONS = f"{BASE}/exceptions"
BAD_PERIOD = "/problems/invalid-reconciliation-period"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def runs(db: Session) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count()).select_from(ReconciliationRun)) or 0)


def unknown_paid_intents(localstripe: LocalStripe, count: int) -> list[str]:
    """Paid intents naming orders the portal never had (as another system's would)."""
    method = localstripe.post("/v1/payment_methods", CARD)
    return [
        localstripe.post(
            "/v1/payment_intents",
            {
                "amount": str(1000 + n),
                "currency": "usd",
                "metadata[order_id]": str(uuid.uuid4()),
                "payment_method": method["id"],
                "confirm": "true",
            },
        )["id"]
        for n in range(count)
    ]


def run_period(client: TestClient, admin: Headers, period: Period) -> dict[str, object]:
    response = client.post(
        RUNS, json={"start": iso(period.start), "end": iso(period.end)}, headers=admin
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_only_admins_reach_reconciliation(
    client: TestClient, doctor: Headers, admin: Headers
) -> None:
    some_id = uuid.uuid4()
    now = datetime.now(UTC)
    period = {"start": iso(now - timedelta(days=1)), "end": iso(now)}
    calls = [
        ("GET", EXCEPTIONS, None),
        ("GET", RUNS, None),
        ("POST", RUNS, period),
        ("POST", f"{EXCEPTIONS}/{some_id}/resolve", {"note": "checked"}),
    ]
    for method, path, body in calls:
        as_doctor = client.request(method, path, json=body, headers=doctor)
        assert_problem(as_doctor, 403, "/problems/forbidden")
        anonymous = client.request(method, path, json=body)
        assert_problem(anonymous, 401, "/problems/not-authenticated")


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        ({"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, 400, BAD_PERIOD),
        ({"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, 400, BAD_PERIOD),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"}, 400, BAD_PERIOD),
        ({"start": "2999-01-01T00:00:00Z", "end": "2999-01-02T00:00:00Z"}, 400, BAD_PERIOD),
        ({"start": "2026-11-01T00:00:00", "end": "2026-11-02T00:00:00"}, 422, None),
        ({"start": "yesterday", "end": "today"}, 422, None),
        ({"start": "2026-11-01T00:00:00Z"}, 422, None),
        (
            {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "dry": True},
            422,
            None,
        ),
        ([], 422, None),
    ],
    ids=[
        "end-before-start",
        "empty",
        "over-92-days",
        "future",
        "no-time-zone",
        "not-dates",
        "missing-end",
        "unknown-field",
        "not-an-object",
    ],
)
def test_a_refused_period_is_a_problem_and_writes_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    body: object,
    status: int,
    problem: str | None,
) -> None:
    before = runs(db)
    assert_problem(client.post(RUNS, json=body, headers=admin), status, problem)
    assert runs(db) == before


def test_exceptions_are_listed_by_kind_and_state_page_by_page(
    client: TestClient, db: Session, admin: Headers, localstripe: LocalStripe
) -> None:
    period = Period(next_whole_second())
    intents = unknown_paid_intents(localstripe, 3)
    report = run_period(client, admin, period)
    assert report["counts"] == {"unknown_intent": 3}
    assert report["actor_subject"] == "admin-main"

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"kind": "unknown_intent", "state": "open", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = client.get(EXCEPTIONS, params=params, headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [item["stripe_object_id"] for item in page["items"]]
        assert all(item["state"] == "open" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(intents)
    assert client.get(EXCEPTIONS, params={"state": "repaired"}, headers=admin).json() == {
        "items": [],
        "next_cursor": None,
    }
    listed_runs = client.get(RUNS, headers=admin).json()["items"]
    assert listed_runs[0]["id"] == report["id"]

    for params in ({"kind": "bogus"}, {"state": "closed"}, {"limit": 0}):
        assert_problem(client.get(EXCEPTIONS, params=params, headers=admin), 422)
    assert_problem(
        client.get(EXCEPTIONS, params={"cursor": "not-a-cursor"}, headers=admin),
        400,
        "/problems/invalid-cursor",
    )


def test_an_exception_is_resolved_once_with_an_encrypted_note(
    client: TestClient, db: Session, admin: Headers, localstripe: LocalStripe, auth: Auth
) -> None:
    period = Period(next_whole_second())
    (intent_id,) = unknown_paid_intents(localstripe, 1)
    run_period(client, admin, period)
    (item,) = client.get(EXCEPTIONS, params={"state": "open"}, headers=admin).json()["items"]
    assert item["stripe_object_id"] == intent_id
    path = f"{EXCEPTIONS}/{item['id']}/resolve"
    note = "Refunded by hand in the Dashboard after a call with finance"

    for bad in ({}, {"note": ""}, {"note": "x" * 501}, {"note": "ok", "extra": 1}):
        assert_problem(client.post(path, json=bad, headers=admin), 422)
    resolved = client.post(path, json={"note": note}, headers=admin)
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["state"], body["resolved_by"]) == ("resolved", "admin-main")
    assert "note" not in body

    db.expire_all()
    row = db.get(ReconciliationException, uuid.UUID(item["id"]))
    assert row is not None and row.resolution_note_encrypted is not None
    assert note not in row.resolution_note_encrypted
    (audited,) = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "payment.reconciliation_resolved")
    ).all()
    assert (audited.actor_subject, audited.entity_id) == ("admin-main", item["id"])
    assert note not in str(audited.after)
    (alert,) = db.scalars(select(Alert).where(Alert.key == f"reconciliation:{item['id']}")).all()
    assert alert.cleared_at is not None  # raised by the run, cleared by the resolution

    assert_problem(
        client.post(path, json={"note": note}, headers=admin),
        409,
        "/problems/invalid-state-transition",
    )
    missing = client.post(f"{EXCEPTIONS}/{uuid.uuid4()}/resolve", json={"note": "x"}, headers=admin)
    assert_problem(missing, 404, "/problems/not-found")
    assert client.get(EXCEPTIONS, params={"state": "open"}, headers=admin).json()["items"] == []
    # Seen again at Stripe, a resolved exception stays resolved.
    again = run_period(client, admin, period)
    assert (again["exceptions_new"], again["counts"]) == (0, {"unknown_intent": 1})
    assert client.get(EXCEPTIONS, params={"state": "open"}, headers=admin).json()["items"] == []


def test_key_rotation_reseals_the_resolution_notes(
    client: TestClient, db: Session, admin: Headers, localstripe: LocalStripe
) -> None:
    """`portal keys rotate` covers the notes: after it, the old key can go."""
    period = Period(next_whole_second())
    unknown_paid_intents(localstripe, 2)
    run_period(client, admin, period)
    for item in client.get(EXCEPTIONS, params={"state": "open"}, headers=admin).json()["items"]:
        path = f"{EXCEPTIONS}/{item['id']}/resolve"
        assert client.post(path, json={"note": "checked"}, headers=admin).status_code == 200

    with second_phi_key():
        assert rotate_resolution_notes(db, batch=1) == 2
        assert rotate_resolution_notes(db) == 0  # resumable: nothing left
        db.expire_all()
        rows = db.scalars(select(ReconciliationException)).all()
        assert all(str(r.resolution_note_encrypted).startswith("enc1:k2:") for r in rows)
        assert [resolution_note(r) for r in rows] == ["checked", "checked"]


def test_stripe_unreachable_is_a_502_and_writes_nothing(
    client: TestClient, db: Session, admin: Headers
) -> None:
    before = runs(db)
    now = datetime.now(UTC)
    period = {"start": iso(now - timedelta(days=1)), "end": iso(now)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{free_port()}")
        clear_caches()
        try:
            response = client.post(RUNS, json=period, headers=admin)
        finally:
            patch.undo()
            clear_caches()
    assert_problem(response, 502, "/problems/payment-provider-unavailable")
    assert runs(db) == before
