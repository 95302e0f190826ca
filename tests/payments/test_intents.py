"""PaymentIntents: one per order and amount, priced by the order, and nothing about the patient
reaches Stripe. Every Stripe call goes over HTTP to the local stand-in."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Payment
from tests.fixtures.identity import Auth
from tests.fixtures.orders import ORDERS, get_order, pay, place_order
from tests.fixtures.patients import Headers, Json, audit_entries
from tests.fixtures.payments import CREATE_INTENT, create_intent
from tests.fixtures.problems import assert_problem
from tests.fixtures.stripe import LocalStripe


def payments_of(db: Session, order_id: str) -> list[Payment]:
    db.expire_all()
    return list(
        db.scalars(
            select(Payment)
            .where(Payment.order_id == uuid.UUID(order_id))
            .order_by(Payment.created_at, Payment.amount_cents)
        )
    )


def test_create_intent_mirrors_the_stripe_intent_in_a_payments_row(
    client: TestClient, db: Session, doctor: Headers, order: Json, localstripe: LocalStripe
) -> None:
    body = create_intent(client, doctor, order["id"])

    intent = localstripe.intent(body["payment_intent_id"])
    assert intent["client_secret"] == body["client_secret"]
    assert intent["amount"] == order["total_cents"] == 2 * 1299
    assert intent["currency"] == "usd"
    assert intent["status"] == "requires_payment_method"
    (payment,) = payments_of(db, order["id"])
    assert payment.stripe_payment_intent_id == body["payment_intent_id"]
    assert payment.amount_cents == order["total_cents"]
    assert payment.currency == "usd"
    assert payment.status == "requires_payment_method"
    assert (payment.refunded_cents, payment.disputed, payment.succeeded_at) == (0, False, None)
    (entry,) = audit_entries(db, order["id"], "payment.intent_created")
    assert entry.after == {
        "payment_intent_id": body["payment_intent_id"],
        "amount_cents": order["total_cents"],
    }


def test_asking_again_reuses_the_open_intent(
    client: TestClient, db: Session, doctor: Headers, admin: Headers, order: Json
) -> None:
    first = create_intent(client, doctor, order["id"])
    again = create_intent(client, doctor, order["id"])
    by_admin = create_intent(client, admin, order["id"])

    assert again == first
    assert by_admin == first
    assert [p.stripe_payment_intent_id for p in payments_of(db, order["id"])] == [
        first["payment_intent_id"]
    ]


def test_editing_the_order_creates_a_new_intent_for_the_new_total(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    product: Json,
    localstripe: LocalStripe,
) -> None:
    first = create_intent(client, doctor, order["id"])

    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 5}]},
        headers=doctor,
    )
    assert response.status_code == 200, response.text
    assert response.json()["total_cents"] == 5 * 1299
    second = create_intent(client, doctor, order["id"])

    assert second["payment_intent_id"] != first["payment_intent_id"]
    assert localstripe.intent(second["payment_intent_id"])["amount"] == 5 * 1299
    assert localstripe.intent(first["payment_intent_id"])["amount"] == 2 * 1299
    rows = payments_of(db, order["id"])
    assert {(p.stripe_payment_intent_id, p.amount_cents) for p in rows} == {
        (first["payment_intent_id"], 2 * 1299),
        (second["payment_intent_id"], 5 * 1299),
    }
    # ...and the new one is reused from then on.
    assert create_intent(client, doctor, order["id"]) == second
    assert len(payments_of(db, order["id"])) == 2


def test_the_amount_comes_from_the_order_never_from_the_request(
    client: TestClient, db: Session, doctor: Headers, order: Json
) -> None:
    extras: list[Json] = [{"amount": 1}, {"amount_cents": 1}, {"currency": "jpy"}, {"metadata": {}}]
    for extra in extras:
        response = client.post(
            CREATE_INTENT, json={"order_id": order["id"], **extra}, headers=doctor
        )
        assert_problem(response, 422)
    assert_problem(client.post(CREATE_INTENT, json={}, headers=doctor), 422)
    assert_problem(client.post(CREATE_INTENT, json={"order_id": "nope"}, headers=doctor), 422)
    assert payments_of(db, order["id"]) == []


def test_no_phi_reaches_stripe(
    client: TestClient,
    doctor: Headers,
    patient: Json,
    product: Json,
    localstripe: LocalStripe,
) -> None:
    note = "Patient allergic to penicillin; call +1 555 010 0199"
    order = place_order(client, doctor, patient["id"], (product["id"], 1), note=note)
    body = create_intent(client, doctor, order["id"])

    intent = localstripe.intent(body["payment_intent_id"])
    assert intent["metadata"] == {"order_id": order["id"]}
    for field in ("description", "receipt_email", "shipping", "customer", "statement_descriptor"):
        assert not intent.get(field), (field, intent.get(field))
    held = json.dumps(intent).lower()
    phone_digits = "".join(ch for ch in patient["phone"] if ch.isdigit())
    for value in (
        patient["name"],
        *patient["name"].split(),
        patient["email"],
        patient["email"].split("@")[0],
        patient["phone"],
        phone_digits,
        patient["date_of_birth"],
        patient["id"],
        note,
        "penicillin",
    ):
        assert value.lower() not in held, value
    assert phone_digits not in "".join(ch for ch in held if ch.isdigit())


def test_a_doctor_cannot_pay_for_another_doctors_order(
    client: TestClient, db: Session, auth: Auth, order: Json
) -> None:
    other_doctor = auth("doctor", sub=f"doctor-other-{uuid.uuid4().hex[:6]}")
    response = client.post(CREATE_INTENT, json={"order_id": order["id"]}, headers=other_doctor)
    assert_problem(response, 404, "/problems/not-found")
    missing = client.post(CREATE_INTENT, json={"order_id": str(uuid.uuid4())}, headers=other_doctor)
    assert_problem(missing, 404, "/problems/not-found")
    assert payments_of(db, order["id"]) == []


def test_a_paid_or_cancelled_order_cannot_get_an_intent(
    client: TestClient,
    db: Session,
    doctor: Headers,
    patient: Json,
    product: Json,
) -> None:
    paid = place_order(client, doctor, patient["id"], (product["id"], 1))
    pay(db, paid["id"])
    cancelled = place_order(client, doctor, patient["id"], (product["id"], 1))
    response = client.post(f"{ORDERS}/{cancelled['id']}/cancel", headers=doctor)
    assert response.status_code == 200, response.text

    for order_id, status in ((paid["id"], "paid"), (cancelled["id"], "cancelled")):
        assert get_order(client, doctor, order_id)["status"] == status
        response = client.post(CREATE_INTENT, json={"order_id": order_id}, headers=doctor)
        problem = assert_problem(response, 409, "/problems/invalid-state-transition")
        assert problem["current_status"] == status
        assert payments_of(db, order_id) == []


def test_an_order_being_paid_gets_no_second_intent(
    client: TestClient, db: Session, doctor: Headers, order: Json
) -> None:
    create_intent(client, doctor, order["id"])
    (payment,) = payments_of(db, order["id"])
    payment.status = "processing"  # a bank debit under way (set by the webhook in real life)
    db.commit()

    response = client.post(CREATE_INTENT, json={"order_id": order["id"]}, headers=doctor)
    assert_problem(response, 409, "/problems/conflict")
    assert len(payments_of(db, order["id"])) == 1


def test_an_order_whose_bank_debit_is_processing_cannot_be_edited(
    client: TestClient, db: Session, doctor: Headers, order: Json, product: Json
) -> None:
    create_intent(client, doctor, order["id"])
    (payment,) = payments_of(db, order["id"])
    payment.status = "processing"
    db.commit()

    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 5}]},
        headers=doctor,
    )

    assert_problem(response, 409, "/problems/conflict")
    assert get_order(client, doctor, order["id"])["total_cents"] == order["total_cents"]
