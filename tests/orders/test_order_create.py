"""Creating an order: 201 pending with the prices captured at that moment and its payment window,
placed by a doctor or by an admin on the doctor's behalf; an unknown or archived product,
an impossible total or bad input writes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import get_settings
from tests.fixtures.orders import (
    ORDERS,
    PRODUCTS,
    allocations_by_lot,
    assert_ledger_consistent,
    create_product,
    get_order,
    lot_counters,
    movement_summary,
    order_body,
    order_row_counts,
    place_order,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json, user_id
from tests.fixtures.problems import assert_problem


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_creating_an_order_answers_201_pending_with_captured_prices_and_total(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    other = create_product(client, admin, sku=f"B-{uuid.uuid4().hex[:8]}", price_cents=250)
    lot_a = receive_lot(client, admin, product["id"], 10)
    lot_b = receive_lot(client, admin, other["id"], 10)

    response = client.post(
        ORDERS,
        json=order_body(patient["id"], (product["id"], 3), (other["id"], 4)),
        headers=doctor,
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert "/pay/" in order.pop("checkout_url")  # shown once; GET does not repeat it
    assert order["status"] == "pending"
    assert order["patient_id"] == patient["id"]
    assert order["doctor_id"] == user_id(client, doctor)
    assert order["currency"] == "usd"
    assert [
        (i["product_id"], i["sku"], i["quantity"], i["unit_price_cents"], i["line_total_cents"])
        for i in order["items"]
    ] == [
        (product["id"], product["sku"], 3, 1299, 3 * 1299),
        (other["id"], other["sku"], 4, 250, 4 * 250),
    ]
    assert order["total_cents"] == 3 * 1299 + 4 * 250
    assert order["paid_at"] is None and order["fulfilled_at"] is None
    assert order["cancelled_at"] is None
    ttl = timedelta(hours=get_settings().order_payment_ttl_hours)
    window = parse_time(order["expires_at"]) - parse_time(order["created_at"])
    assert ttl <= window < ttl + timedelta(minutes=5)
    assert allocations_by_lot(order) == {lot_a["id"]: 3, lot_b["id"]: 4}
    assert lot_counters(db, lot_a["id"]) == (10, 3)
    assert lot_counters(db, lot_b["id"]) == (10, 4)
    assert movement_summary(db, order["id"]) == sorted(
        [("reservation", lot_a["id"], 0, 3), ("reservation", lot_b["id"], 0, 4)]
    )
    assert get_order(client, doctor, order["id"]) == order
    assert_ledger_consistent(db)


def test_changing_the_product_price_afterwards_does_not_change_the_order(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))

    changed = client.patch(f"{PRODUCTS}/{product['id']}", json={"price_cents": 9999}, headers=admin)
    assert changed.status_code == 200, changed.text

    again = get_order(client, doctor, order["id"])
    assert again["items"][0]["unit_price_cents"] == 1299
    assert again["total_cents"] == 2 * 1299
    (summary,) = client.get(ORDERS, headers=doctor).json()["items"]
    assert summary["total_cents"] == 2 * 1299
    # A new order is priced now.
    fresh = place_order(client, doctor, patient["id"], (product["id"], 1))
    assert fresh["total_cents"] == 9999


def test_admin_orders_for_a_patient_on_behalf_of_the_patients_doctor(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)

    order = place_order(client, admin, patient["id"], (product["id"], 1))

    assert order["doctor_id"] == patient["doctor_id"] == user_id(client, doctor)
    listed = client.get(ORDERS, headers=doctor).json()["items"]
    assert [o["id"] for o in listed] == [order["id"]]


def test_lines_of_the_same_product_are_merged_into_one_item(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 10)

    order = place_order(client, doctor, patient["id"], (product["id"], 2), (product["id"], 3))

    (item,) = order["items"]
    assert item["quantity"] == 5
    assert order["total_cents"] == 5 * 1299
    assert lot_counters(db, lot["id"]) == (10, 5)


def test_an_order_total_beyond_the_largest_accepted_is_409_and_writes_nothing(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json
) -> None:
    # 100 units at one million dollars: the total does not fit an order (it answered 500).
    expensive = create_product(client, admin, price_cents=100_000_000)
    lot = receive_lot(client, admin, expensive["id"], 100)
    user_id(client, doctor)
    before = order_row_counts(db)

    response = client.post(
        ORDERS, json=order_body(patient["id"], (expensive["id"], 100)), headers=doctor
    )

    body = assert_problem(response, 409, "/problems/conflict")
    assert "largest order" in body["detail"]
    assert order_row_counts(db) == before
    assert lot_counters(db, lot["id"]) == (100, 0)


@pytest.mark.parametrize("which", ["unknown", "archived"])
def test_ordering_an_unknown_or_archived_product_is_404_or_409_and_writes_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    which: str,
) -> None:
    lot = receive_lot(client, admin, product["id"], 10)
    target = str(uuid.uuid4())
    if which == "archived":
        archived = create_product(client, admin)
        receive_lot(client, admin, archived["id"], 10)
        response = client.patch(
            f"{PRODUCTS}/{archived['id']}", json={"active": False}, headers=admin
        )
        assert response.status_code == 200, response.text
        target = archived["id"]
    user_id(client, doctor)
    before = order_row_counts(db)

    response = client.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 1), (target, 1)), headers=doctor
    )

    # Like an unknown patient (404); an archived product conflicts with its state (409).
    if which == "unknown":
        assert_problem(response, 404, "/problems/not-found")
    else:
        assert_problem(response, 409, "/problems/conflict")
    assert order_row_counts(db) == before
    assert lot_counters(db, lot["id"]) == (10, 0)


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no items", {"items": []}),
        ("zero quantity", {"items": [{"quantity": 0}]}),
        ("negative quantity", {"items": [{"quantity": -2}]}),
        ("fractional quantity", {"items": [{"quantity": 1.5}]}),
        ("quantity as text", {"items": [{"quantity": "2"}]}),
        ("unknown field", {"discount": 50}),
        ("unknown item field", {"items": [{"quantity": 1, "unit_price_cents": 1}]}),
    ],
)
def test_bad_order_input_is_422_and_writes_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    case: str,
    body: Json,
) -> None:
    receive_lot(client, admin, product["id"], 10)
    request = order_body(patient["id"], (product["id"], 1))
    for key, value in body.items():
        if key == "items":
            request["items"] = [{**request["items"][0], **item} for item in value]
        else:
            request[key] = value
    user_id(client, doctor)
    before = order_row_counts(db)

    response = client.post(ORDERS, json=request, headers=doctor)

    assert_problem(response, 422, "/problems/validation-error")
    assert order_row_counts(db) == before, case
