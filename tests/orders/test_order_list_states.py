"""The order list says where each order's money and prescriptions stand, and finds an order by
the reference its patient reads out, or by its doctor."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Order, Payment
from app.models.base import utcnow
from tests.fixtures.identity import Auth
from tests.fixtures.orders import ORDERS, place_order, receive_lot
from tests.fixtures.patients import Headers, Json, create_patient, user_id
from tests.fixtures.pharmacy_orders import (
    create_pharmacy,
    paid_prescription_order,
    prescription_product,
)
from tests.fixtures.problems import assert_problem


def listed(client: TestClient, headers: Headers, **params: Any) -> dict[str, Json]:
    response = client.get(ORDERS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {order["id"]: order for order in response.json()["items"]}


def test_each_order_carries_its_payment_and_pharmacy_state(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    create_pharmacy(client, admin, "fhir_r4", "http://127.0.0.1:9/fhir")
    receive_lot(client, admin, product["id"], 10)
    unpaid = place_order(client, doctor, patient["id"], (product["id"], 1))
    paid = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    order = db.get(Order, uuid.UUID(paid["id"]))
    assert order is not None
    # A second, refunded and disputed payment of the paid order, the newest.
    db.add(
        Payment(
            order_id=order.id,
            stripe_payment_intent_id=f"pi_{uuid.uuid4().hex[:20]}",
            status="canceled",
            amount_cents=order.total_cents,
            currency="usd",
            refunded_cents=150,
            disputed=True,
            created_at=utcnow() + timedelta(seconds=1),
        )
    )
    db.commit()

    orders = listed(client, doctor)

    assert (
        orders[unpaid["id"]]["payment_status"],
        orders[unpaid["id"]]["refunded_cents"],
        orders[unpaid["id"]]["disputed"],
        orders[unpaid["id"]]["pharmacy_statuses"],
    ) == (None, 0, False, [])
    assert (
        orders[paid["id"]]["payment_status"],
        orders[paid["id"]]["refunded_cents"],
        orders[paid["id"]]["disputed"],
        orders[paid["id"]]["pharmacy_statuses"],
    ) == ("canceled", 150, True, ["pending"])


def test_an_order_is_found_by_its_reference_in_either_case_and_by_its_doctor(
    client: TestClient, admin: Headers, doctor: Headers, auth: Auth, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 10)
    mine = place_order(client, doctor, patient["id"], (product["id"], 1))
    other_doctor = auth("doctor")
    theirs = place_order(
        client, other_doctor, create_patient(client, other_doctor)["id"], (product["id"], 1)
    )
    reference = mine["id"][:8]

    assert set(listed(client, admin, reference=reference.upper())) == {mine["id"]}
    assert set(listed(client, doctor, reference=reference)) == {mine["id"]}
    # A doctor finds nothing of another doctor's by its reference.
    assert listed(client, other_doctor, reference=reference) == {}
    by_doctor = listed(client, admin, doctor_id=user_id(client, other_doctor))
    assert set(by_doctor) == {theirs["id"]}
    for bad in ("abc", "ghijklmn", mine["id"]):
        assert_problem(client.get(ORDERS, params={"reference": bad}, headers=admin), 422)
