"""An order's timeline: every milestone in order, in plain words, from the audit log and the
outbox; no personal details; the same visibility as the order itself."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Payment
from app.models.base import utcnow
from app.payments import flows as payment_flows
from app.pharmacy import flows as pharmacy_flows
from tests.fixtures.identity import Auth
from tests.fixtures.orders import ORDERS, create_product, receive_lot
from tests.fixtures.patients import Headers, Json
from tests.fixtures.pharmacy_double import NAME, PharmacyState, pharmacy_double
from tests.fixtures.pharmacy_orders import (
    create_pharmacy,
    paid_prescription_order,
    prescription_product,
    submissions_of,
)
from tests.fixtures.problems import assert_problem

__all__ = ["pharmacy_double"]


def timeline(client: TestClient, headers: Headers, order_id: str) -> Json:
    response = client.get(f"{ORDERS}/{order_id}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def events(body: Json) -> list[str]:
    return [event["event"] for event in body["events"]]


def test_a_prescription_order_shows_each_step_from_creation_to_fulfilment(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, "http://127.0.0.1:9/fhir", name="Main St Pharmacy")
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    pharmacy_flows.drain(sessions)
    (submission,) = submissions_of(db, order["id"])
    assert submission.external_id is not None
    pharmacy_double.dispense(submission.external_id)
    pharmacy_flows.poll_statuses(sessions, now=utcnow() + timedelta(hours=1))
    assert client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin).status_code == 200

    body = timeline(client, doctor, order["id"])

    assert body["status"] == "fulfilled"
    assert events(body) == [
        "created",
        "link_sent",
        "paid",
        "pharmacy_queued",
        "pharmacy_accepted",
        "dispensed",
        "fulfilled",
    ]
    by_event = {event["event"]: event for event in body["events"]}
    total = order["total_cents"]
    assert by_event["created"]["facts"] == {"total_cents": total}
    assert by_event["created"]["summary"] == f"Order created for {total / 100:,.2f} USD"
    assert by_event["created"]["actor_role"] == "doctor"
    assert by_event["link_sent"]["facts"]["email"] == "queued"  # the worker has not sent it yet
    assert by_event["dispensed"]["summary"] == "Main St Pharmacy dispensed the prescription"
    assert by_event["fulfilled"]["actor_role"] == "admin"
    times = [event["at"] for event in body["events"]]
    assert times == sorted(times)
    # Neither the patient's details nor the medicine or its directions.
    text = json.dumps(body)
    for secret in (order["patient"]["name"], order["patient"]["email"], "Amoxicillin", "capsule"):
        assert secret not in text
    # Reads are not milestones: reading it again (as an admin) shows the same.
    assert timeline(client, admin, order["id"]) == body


def test_a_cancelled_paid_order_shows_the_reason_and_the_refund(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    product = create_product(client, admin)
    receive_lot(client, admin, product["id"], 5)
    order = paid_prescription_order(client, db, doctor, product)
    cancelled = client.post(
        f"{ORDERS}/{order['id']}/cancel",
        json={"reason": "patient_request", "note": "Patient moved to another clinic"},
        headers=doctor,
    )
    assert cancelled.status_code == 200, cancelled.text
    payment = db.scalar(select(Payment).where(Payment.order_id == uuid.UUID(order["id"])))
    assert payment is not None
    # What the outbox worker records once Stripe accepted the refund.
    payment_flows.record_refund_sent(
        db,
        payment.id,
        {
            "id": "re_test_1",
            "amount": payment.amount_cents,
            "currency": "usd",
            "status": "succeeded",
        },
    )
    db.commit()

    body = timeline(client, admin, order["id"])

    assert body["status"] == "cancelled"
    assert events(body) == [
        "created",
        "link_sent",
        "paid",
        "cancelled",
        "refund_requested",
        "refunded",
    ]
    cancel, refunded = body["events"][3], body["events"][5]
    assert cancel["summary"] == "Cancelled (patient request)"
    assert cancel["facts"] == {"reason": "patient_request"}
    assert "moved" not in json.dumps(body)  # the note is never shown here
    amount = f"{payment.amount_cents / 100:,.2f} USD"
    assert refunded["summary"] == f"Refunded {amount} of {amount}"


def test_a_new_link_is_a_second_link_sent_and_the_old_one_withdrawn(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    created = client.post(
        ORDERS,
        json={"patient_id": patient["id"], "items": [{"product_id": product["id"], "quantity": 1}]},
        headers=doctor,
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    assert client.post(f"{ORDERS}/{order_id}/checkout-link", headers=doctor).status_code == 201

    assert events(timeline(client, doctor, order_id)) == ["created", "link_sent", "link_sent"]


def test_another_doctors_order_is_404_like_a_missing_one(
    client: TestClient, admin: Headers, doctor: Headers, auth: Auth, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    created = client.post(
        ORDERS,
        json={"patient_id": patient["id"], "items": [{"product_id": product["id"], "quantity": 1}]},
        headers=doctor,
    )
    order_id = created.json()["id"]

    assert_problem(client.get(f"{ORDERS}/{order_id}/timeline", headers=auth("doctor")), 404)
    assert_problem(client.get(f"{ORDERS}/{uuid.uuid4()}/timeline", headers=doctor), 404)
    assert_problem(client.get(f"{ORDERS}/{order_id}/timeline"), 401)
