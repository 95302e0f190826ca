"""Editing a pending order: its items replaced and reserved again, captured prices kept, and an edit
that would be short or comes too late changes nothing."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.orders import (
    ORDERS,
    PRODUCTS,
    allocations_by_lot,
    assert_ledger_consistent,
    create_product,
    get_order,
    lot_counters,
    movement_summary,
    order_row_counts,
    pay,
    place_order,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json
from tests.fixtures.problems import assert_problem


def test_editing_a_pending_order_replaces_its_items_and_reserves_again(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    other = create_product(client, admin, sku=f"B-{uuid.uuid4().hex[:8]}", price_cents=500)
    first_lot = receive_lot(client, admin, product["id"], 10, expires_in_days=30)
    second_lot = receive_lot(client, admin, product["id"], 10, expires_in_days=60)
    other_lot = receive_lot(client, admin, other["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 3))

    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={
            "items": [
                {"product_id": product["id"], "quantity": 12},
                {"product_id": other["id"], "quantity": 2},
            ]
        },
        headers=doctor,
    )

    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["status"] == "pending"
    assert [(i["product_id"], i["quantity"]) for i in edited["items"]] == [
        (product["id"], 12),
        (other["id"], 2),
    ]
    assert edited["total_cents"] == 12 * 1299 + 2 * 500
    assert allocations_by_lot(edited) == {
        first_lot["id"]: 10,
        second_lot["id"]: 2,
        other_lot["id"]: 2,
    }
    assert lot_counters(db, first_lot["id"]) == (10, 10)
    assert lot_counters(db, second_lot["id"]) == (10, 2)
    assert lot_counters(db, other_lot["id"]) == (10, 2)
    assert movement_summary(db, order["id"]) == sorted(
        [
            ("reservation", first_lot["id"], 0, 3),
            ("release", first_lot["id"], 0, -3),
            ("reservation", first_lot["id"], 0, 10),
            ("reservation", second_lot["id"], 0, 2),
            ("reservation", other_lot["id"], 0, 2),
        ]
    )
    assert get_order(client, doctor, order["id"]) == edited
    assert_ledger_consistent(db)


def test_editing_keeps_captured_prices_and_prices_newly_added_products_now(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    other = create_product(client, admin, sku=f"B-{uuid.uuid4().hex[:8]}", price_cents=500)
    receive_lot(client, admin, product["id"], 10)
    receive_lot(client, admin, other["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    for changed in (product, other):
        client.patch(f"{PRODUCTS}/{changed['id']}", json={"price_cents": 7777}, headers=admin)

    edited = client.patch(
        f"{ORDERS}/{order['id']}",
        json={
            "items": [
                {"product_id": product["id"], "quantity": 2},
                {"product_id": other["id"], "quantity": 1},
            ]
        },
        headers=doctor,
    ).json()

    assert [i["unit_price_cents"] for i in edited["items"]] == [1299, 7777]
    assert edited["total_cents"] == 2 * 1299 + 7777


def test_an_edit_counts_the_orders_own_reservation_and_an_edit_that_would_be_short_changes_nothing(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    other = create_product(client, admin, sku=f"B-{uuid.uuid4().hex[:8]}")
    lot = receive_lot(client, admin, product["id"], 5)
    other_lot = receive_lot(client, admin, other["id"], 1)
    order = place_order(client, doctor, patient["id"], (product["id"], 3))
    # The order's own three units are available to it again: 3 -> 5 of a lot of 5 works.
    grown = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 5}]},
        headers=doctor,
    )
    assert grown.status_code == 200, grown.text
    kept = get_order(client, doctor, order["id"])
    before = order_row_counts(db)

    for items in (
        [{"product_id": product["id"], "quantity": 6}],
        [{"product_id": product["id"], "quantity": 1}, {"product_id": other["id"], "quantity": 2}],
    ):
        response = client.patch(f"{ORDERS}/{order['id']}", json={"items": items}, headers=doctor)

        body = assert_problem(response, 409, "/problems/insufficient-stock")
        assert body["available"] in (5, 1)
        assert order_row_counts(db) == before
        assert lot_counters(db, lot["id"]) == (5, 5)
        assert lot_counters(db, other_lot["id"]) == (1, 0)
        assert get_order(client, doctor, order["id"]) == kept
        before = order_row_counts(db)  # the read wrote its audit row
    assert_ledger_consistent(db)


@pytest.mark.parametrize("status", ["paid", "cancelled", "fulfilled"])
def test_editing_an_order_that_is_no_longer_pending_is_409(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    status: str,
) -> None:
    lot = receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    if status == "cancelled":
        client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
    else:
        pay(db, order["id"])
        if status == "fulfilled":
            client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    current = get_order(client, doctor, order["id"])
    assert current["status"] == status
    counters = lot_counters(db, lot["id"])

    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 1}]},
        headers=doctor,
    )

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == status
    assert get_order(client, doctor, order["id"]) == current
    assert lot_counters(db, lot["id"]) == counters
