"""GET and PUT /api/v1/users/me/alert-subscriptions: a member of staff chooses the topics they
hear about and how; doctors may only choose stock; the SMS number is stored encrypted."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.models import AlertSubscription
from tests.fixtures.alerts import signed_in
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.patients import Headers, audit_entries, user_id
from tests.fixtures.problems import assert_problem

MINE = "/api/v1/users/me/alert-subscriptions"
PHONE = "+15550100142"
NOTHING = {"stock": None, "reconciliation": None, "data_quality": None, "pharmacy": None}


def put(client: TestClient, headers: Headers, subscriptions: Any) -> Any:
    return client.put(MINE, json={"subscriptions": subscriptions}, headers=headers)


def stored(db: Session) -> list[AlertSubscription]:
    db.expire_all()
    return list(db.scalars(select(AlertSubscription).order_by(AlertSubscription.topic)))


@pytest.fixture
def admin_with_email(jwt_issuer: JwtIssuer) -> Headers:
    return signed_in(jwt_issuer, "admin")


@pytest.fixture
def doctor_with_email(jwt_issuer: JwtIssuer) -> Headers:
    return signed_in(jwt_issuer, "doctor")


def test_a_new_account_hears_about_nothing_and_is_told_what_it_may_choose(
    client: TestClient, admin_with_email: Headers, doctor_with_email: Headers
) -> None:
    admin = client.get(MINE, headers=admin_with_email)
    assert admin.status_code == 200, admin.text
    assert admin.json()["subscriptions"] == NOTHING
    assert admin.json()["available_topics"] == [
        "stock",
        "reconciliation",
        "data_quality",
        "pharmacy",
    ]
    assert admin.json()["email"].endswith("@clinic.test")
    doctor = client.get(MINE, headers=doctor_with_email)
    assert doctor.json()["available_topics"] == ["stock"]


def test_an_admin_subscribes_by_email_and_sms_and_the_number_is_stored_encrypted(
    client: TestClient, db: Session, admin_with_email: Headers
) -> None:
    wanted = {
        "stock": {"email": True, "sms_to": PHONE},
        "reconciliation": {"email": True},
        "data_quality": {"email": False, "sms_to": PHONE},
    }

    response = put(client, admin_with_email, wanted)

    assert response.status_code == 200, response.text
    expected = {
        **NOTHING,
        "stock": {"email": True, "sms_to": PHONE},
        "reconciliation": {"email": True, "sms_to": None},
        "data_quality": {"email": False, "sms_to": PHONE},
    }
    assert response.json()["subscriptions"] == expected
    assert client.get(MINE, headers=admin_with_email).json()["subscriptions"] == expected
    raw = db.execute(text("SELECT row_to_json(s)::text FROM alert_subscriptions s")).scalars()
    assert all(PHONE not in row and PHONE[2:] not in row for row in raw)
    rows = stored(db)
    assert [(r.topic, r.by_email, r.sms_to_encrypted is not None) for r in rows] == [
        ("data_quality", False, True),
        ("reconciliation", True, False),
        ("stock", True, True),
    ]
    # Audited, saying there is a number but not which.
    db.commit()
    (entry,) = audit_entries(db, user_id(client, admin_with_email), "alert_subscriptions.replaced")
    assert entry.after["stock"] == {"email": True, "sms": True}
    assert PHONE not in str(entry.after) and PHONE[2:] not in str(entry.after)


def test_put_replaces_the_whole_set_and_an_entry_without_a_channel_unsubscribes(
    client: TestClient, db: Session, admin_with_email: Headers
) -> None:
    put(client, admin_with_email, {"stock": {"email": True}, "pharmacy": {"email": True}})
    first_stock = next(r.id for r in stored(db) if r.topic == "stock")

    response = put(
        client,
        admin_with_email,
        {"stock": {"email": True, "sms_to": PHONE}, "pharmacy": {"email": False}},
    )

    assert response.status_code == 200, response.text
    assert response.json()["subscriptions"] == {
        **NOTHING,
        "stock": {"email": True, "sms_to": PHONE},
    }
    assert [(r.topic, r.id) for r in stored(db)] == [("stock", first_stock)]  # kept, updated
    assert put(client, admin_with_email, {}).json()["subscriptions"] == NOTHING
    assert stored(db) == []


def test_the_same_put_twice_writes_one_audit_row(
    client: TestClient, db: Session, admin_with_email: Headers
) -> None:
    for _ in range(2):
        assert put(client, admin_with_email, {"stock": {"email": True}}).status_code == 200
    db.commit()
    me = user_id(client, admin_with_email)
    assert len(audit_entries(db, me, "alert_subscriptions.replaced")) == 1


def test_a_doctor_may_subscribe_to_stock_only(
    client: TestClient, db: Session, doctor_with_email: Headers
) -> None:
    ok = put(client, doctor_with_email, {"stock": {"email": True}})
    assert ok.status_code == 200, ok.text

    for topic in ("reconciliation", "data_quality", "pharmacy"):
        refused = put(client, doctor_with_email, {"stock": None, topic: {"email": True}})
        body = assert_problem(refused, 403, "/problems/forbidden")
        assert topic in body["detail"]
        assert body["allowed_topics"] == ["stock"]
    # Nothing changed by the refusals.
    assert [r.topic for r in stored(db)] == ["stock"]


def test_email_alerts_need_an_address_on_the_account(
    client: TestClient, db: Session, jwt_issuer: JwtIssuer
) -> None:
    no_email = signed_in(jwt_issuer, "admin", email=None)

    refused = put(client, no_email, {"stock": {"email": True}})

    assert_problem(refused, 409, "/problems/conflict")
    assert stored(db) == []
    by_sms = put(client, no_email, {"stock": {"email": False, "sms_to": PHONE}})
    assert by_sms.status_code == 200, by_sms.text


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"subscriptions": None},
        {"subscriptions": {"billing": {"email": True}}},
        {"subscriptions": {"stock": {"email": "yes"}}},
        {"subscriptions": {"stock": {"email": 1}}},
        {"subscriptions": {"stock": {}}},
        {"subscriptions": {"stock": {"email": True, "sms_to": "555-0100"}}},
        {"subscriptions": {"stock": {"email": True, "sms_to": "+1 555 010 0142"}}},
        {"subscriptions": {"stock": {"email": True, "sms_to": "+0555010014"}}},
        {"subscriptions": {"stock": {"email": True, "sms_to": "+1555010014299999"}}},
        {"subscriptions": {"stock": {"email": True, "push": True}}},
        {"subscriptions": {"stock": {"email": True}}, "extra": 1},
        {"subscriptions": [{"topic": "stock", "email": True}]},
    ],
)
def test_bad_input_is_a_422_problem_and_writes_nothing(
    client: TestClient, db: Session, admin_with_email: Headers, body: Any
) -> None:
    response = client.put(MINE, json=body, headers=admin_with_email)

    assert_problem(response, 422, "/problems/validation-error")
    assert stored(db) == []


def test_malformed_json_is_a_400_problem(client: TestClient, admin_with_email: Headers) -> None:
    response = client.put(
        MINE,
        content=b'{"subscriptions": ',
        headers={**admin_with_email, "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "/problems/malformed-json")


def test_anonymous_callers_and_deactivated_accounts_are_refused(
    client: TestClient, db: Session, admin: Headers, jwt_issuer: JwtIssuer
) -> None:
    assert_problem(client.get(MINE), 401)
    assert_problem(client.put(MINE, json={"subscriptions": {}}), 401)
    leaver = signed_in(jwt_issuer, "doctor")
    leaver_id = user_id(client, leaver)
    response = client.patch(f"/api/v1/users/{leaver_id}", json={"active": False}, headers=admin)
    assert response.status_code == 200, response.text

    assert_problem(client.get(MINE, headers=leaver), 403)
    assert_problem(put(client, leaver, {"stock": {"email": True}}), 403)
    assert stored(db) == []
