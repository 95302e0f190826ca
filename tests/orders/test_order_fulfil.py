"""Paying and fulfilling an order: only a paid order ships, by staff, from lots still usable, and
its reserved stock is consumed."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.errors import InvalidStateTransition
from app.inventory.repository import today
from tests.fixtures.orders import (
    ORDERS,
    allocations_by_lot,
    assert_ledger_consistent,
    get_order,
    lot_counters,
    movement_summary,
    movements,
    pay,
    place_order,
    receive_lot,
    set_lot_status,
)
from tests.fixtures.patients import Headers, Json
from tests.fixtures.problems import assert_problem


def test_paying_a_pending_order_makes_it_paid_and_paying_again_is_refused(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))

    pay(db, order["id"])

    paid = get_order(client, doctor, order["id"])
    assert paid["status"] == "paid"
    assert paid["paid_at"] is not None
    assert lot_counters(db, lot["id"]) == (5, 2)  # still reserved, not yet shipped
    with pytest.raises(InvalidStateTransition):
        pay(db, order["id"])
    db.rollback()
    assert get_order(client, doctor, order["id"])["paid_at"] == paid["paid_at"]


def test_fulfilling_a_paid_order_consumes_its_reserved_stock(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    first = receive_lot(client, admin, product["id"], 4, expires_in_days=30)
    second = receive_lot(client, admin, product["id"], 10, expires_in_days=60)
    order = place_order(client, doctor, patient["id"], (product["id"], 6))
    pay(db, order["id"])

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    assert response.status_code == 200, response.text
    fulfilled = response.json()
    assert fulfilled["status"] == "fulfilled"
    assert fulfilled["fulfilled_at"] is not None
    assert allocations_by_lot(fulfilled) == {first["id"]: 4, second["id"]: 2}
    assert lot_counters(db, first["id"]) == (0, 0)
    assert lot_counters(db, second["id"]) == (8, 0)
    shipped = [m for m in movements(db, order_id=order["id"]) if m.reason == "fulfilment"]
    assert sorted((str(m.lot_id), m.delta_on_hand, m.delta_reserved) for m in shipped) == sorted(
        [(first["id"], -4, -4), (second["id"], -2, -2)]
    )
    assert all(m.actor_subject == "admin-main" for m in shipped)
    assert_ledger_consistent(db)


def test_doctor_cannot_fulfil_an_order(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    pay(db, order["id"])

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=doctor)

    assert_problem(response, 403, "/problems/forbidden")
    assert get_order(client, doctor, order["id"])["status"] == "paid"
    assert lot_counters(db, lot["id"]) == (5, 2)


@pytest.mark.parametrize("status", ["pending", "cancelled", "fulfilled"])
def test_fulfilling_an_order_that_is_not_paid_is_409_with_its_current_status(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    status: str,
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    if status == "cancelled":
        client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
    if status == "fulfilled":
        pay(db, order["id"])
        client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    counters = lot_counters(db, lot["id"])
    ledger = movement_summary(db, order["id"])

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == status
    assert get_order(client, admin, order["id"])["status"] == status
    assert lot_counters(db, lot["id"]) == counters
    assert movement_summary(db, order["id"]) == ledger


@pytest.mark.parametrize("lot_status", ["recalled", "quarantined"])
def test_fulfilling_an_order_whose_lot_became_unusable_meanwhile_is_409_and_ships_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    lot_status: str,
) -> None:
    good = receive_lot(client, admin, product["id"], 4, expires_in_days=30)
    bad = receive_lot(client, admin, product["id"], 10, expires_in_days=60)
    order = place_order(client, doctor, patient["id"], (product["id"], 6))
    pay(db, order["id"])
    set_lot_status(client, admin, bad["id"], lot_status)

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["lot_id"] == bad["id"]
    assert body["lot_status"] == lot_status
    assert get_order(client, admin, order["id"])["status"] == "paid"
    assert lot_counters(db, good["id"]) == (4, 4)  # not even the good lot shipped
    assert lot_counters(db, bad["id"]) == (10, 2)
    assert not [m for m in movements(db, order_id=order["id"]) if m.reason == "fulfilment"]
    # Cancelling still gives the units back.
    assert client.post(f"{ORDERS}/{order['id']}/cancel", headers=admin).status_code == 200
    assert lot_counters(db, good["id"]) == (4, 0)
    assert lot_counters(db, bad["id"]) == (10, 0)
    assert_ledger_consistent(db)


def test_fulfilling_an_order_whose_lot_has_since_expired_is_409(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5, expires_in_days=30)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    pay(db, order["id"])
    db.execute(
        text("UPDATE lots SET expiration_date = :day WHERE id = :id"),
        {"day": today() - timedelta(days=1), "id": uuid.UUID(lot["id"])},
    )
    db.commit()
    db.expire_all()

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["lot_status"] == "expired"
    assert lot_counters(db, lot["id"]) == (5, 2)
