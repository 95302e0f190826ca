"""The low-stock report: which products are at or below par, and what to reorder."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.inventory.repository import today
from tests.fixtures.catalog import PRODUCTS, create_product, insert_lot, receive_lot, reserve
from tests.fixtures.problems import assert_problem

Headers = dict[str, str]
Json = dict[str, Any]
LOW_STOCK = "/api/v1/inventory/low-stock"


def low_stock(client: TestClient, headers: Headers, **params: Any) -> dict[str, Json]:
    response = client.get(LOW_STOCK, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {item["product_id"]: item for item in response.json()["items"]}


def set_status(client: TestClient, headers: Headers, lot_id: str, status: str) -> None:
    response = client.post(
        f"/api/v1/lots/{lot_id}/status", json={"status": status, "reason": "QA"}, headers=headers
    )
    assert response.status_code == 200, response.text


def test_low_stock_counts_only_sellable_units_against_par(
    client: TestClient, db: Session, admin: Headers
) -> None:
    day = today()
    product = create_product(client, admin, par_level=10, reorder_quantity=12)
    pid = product["id"]
    receive_lot(client, admin, pid, quantity=4, expiration_date=day + timedelta(days=10))
    reserved = receive_lot(client, admin, pid, quantity=7, expiration_date=day + timedelta(100))
    reserve(db, reserved["id"], 2)
    quarantined = receive_lot(client, admin, pid, quantity=50, expiration_date=day + timedelta(2))
    set_status(client, admin, quarantined["id"], "quarantined")
    recalled = receive_lot(client, admin, pid, quantity=60)
    set_status(client, admin, recalled["id"], "recalled")
    insert_lot(db, pid, quantity=30, expiration_date=day - timedelta(days=1))  # already expired

    item = low_stock(client, admin)[pid]

    assert item["sku"] == product["sku"]
    assert item["name"] == product["name"]
    assert (item["par_level"], item["reorder_quantity"]) == (10, 12)
    assert item["quantity_sellable"] == 4 + (7 - 2)
    assert item["quantity_on_hand"] == 4 + 7
    assert item["quantity_reserved"] == 2
    # The quarantined lot expires sooner but is not sellable, so it is not the next expiry.
    assert item["next_expiration_date"] == (day + timedelta(days=10)).isoformat()
    # 9 sellable, par 10: 2 units get back above par, rounded up to one case of 12.
    assert item["suggested_order_quantity"] == 12


def test_quarantined_and_recalled_stock_does_not_keep_a_product_off_the_report(
    client: TestClient, admin: Headers
) -> None:
    product = create_product(client, admin, par_level=3, reorder_quantity=10)
    for status in ("quarantined", "recalled"):
        lot = receive_lot(client, admin, product["id"], quantity=100)
        set_status(client, admin, lot["id"], status)

    item = low_stock(client, admin)[product["id"]]

    assert item["quantity_sellable"] == 0
    assert item["quantity_on_hand"] == 0
    assert item["suggested_order_quantity"] == 10


def test_product_at_par_is_listed_and_one_above_par_is_not(
    client: TestClient, admin: Headers
) -> None:
    at_par = create_product(client, admin, par_level=5, reorder_quantity=0)
    above_par = create_product(client, admin, par_level=5, reorder_quantity=0)
    receive_lot(client, admin, at_par["id"], quantity=5)
    receive_lot(client, admin, above_par["id"], quantity=6)

    report = low_stock(client, admin)

    assert at_par["id"] in report
    assert report[at_par["id"]]["suggested_order_quantity"] == 1
    assert above_par["id"] not in report


def test_reservations_can_push_a_product_onto_the_report(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, par_level=5, reorder_quantity=0)
    lot = receive_lot(client, admin, product["id"], quantity=8)
    assert product["id"] not in low_stock(client, admin)

    reserve(db, lot["id"], 3)

    assert low_stock(client, admin)[product["id"]]["quantity_sellable"] == 5


def test_archived_products_are_not_on_the_report(client: TestClient, admin: Headers) -> None:
    product = create_product(client, admin, par_level=100)
    assert product["id"] in low_stock(client, admin)

    archived = client.patch(f"{PRODUCTS}/{product['id']}", json={"active": False}, headers=admin)

    assert archived.status_code == 200
    assert product["id"] not in low_stock(client, admin)


@pytest.mark.parametrize(
    ("within_days", "expected"),
    [(0, 0), (5, 3), (29, 3), (30, 3 + 4), (365, 3 + 4 + 6)],
)
def test_quantity_expiring_soon_counts_sellable_units_expiring_within_the_window(
    client: TestClient, db: Session, admin: Headers, within_days: int, expected: int
) -> None:
    day = today()
    product = create_product(client, admin, par_level=1000, perishable=True)
    pid = product["id"]
    receive_lot(client, admin, pid, quantity=3, expiration_date=day + timedelta(days=5))
    receive_lot(client, admin, pid, quantity=4, expiration_date=day + timedelta(days=30))
    receive_lot(client, admin, pid, quantity=6, expiration_date=day + timedelta(days=200))
    held = receive_lot(client, admin, pid, quantity=50, expiration_date=day + timedelta(days=2))
    set_status(client, admin, held["id"], "quarantined")
    insert_lot(db, pid, quantity=70, expiration_date=day - timedelta(days=1))

    item = low_stock(client, admin, expiring_within_days=within_days)[pid]

    assert item["quantity_sellable"] == 13
    assert item["quantity_expiring_soon"] == expected


def test_quantity_expiring_soon_defaults_to_a_thirty_day_window(
    client: TestClient, admin: Headers
) -> None:
    day = today()
    product = create_product(client, admin, par_level=1000, perishable=True)
    receive_lot(client, admin, product["id"], quantity=2, expiration_date=day + timedelta(30))
    receive_lot(client, admin, product["id"], quantity=9, expiration_date=day + timedelta(31))

    assert low_stock(client, admin)[product["id"]]["quantity_expiring_soon"] == 2


@pytest.mark.parametrize(
    ("par_level", "reorder_quantity", "sellable", "suggested"),
    [
        (20, 5, 3, 20),  # 18 short of par+1 -> four cases of 5
        (20, 6, 3, 18),  # 18 short -> exactly three cases of 6
        (20, 6, 2, 24),  # 19 short -> four cases of 6
        (10, 0, 4, 7),  # no case size: exactly the shortfall
        (10, 100, 10, 100),  # at par: one case
        (0, 10, 0, 10),  # par 0 and nothing sellable
    ],
)
def test_suggested_order_quantity_rounds_up_to_the_reorder_quantity(
    client: TestClient,
    admin: Headers,
    par_level: int,
    reorder_quantity: int,
    sellable: int,
    suggested: int,
) -> None:
    product = create_product(client, admin, par_level=par_level, reorder_quantity=reorder_quantity)
    if sellable:
        receive_lot(client, admin, product["id"], quantity=sellable)

    item = low_stock(client, admin)[product["id"]]

    assert item["quantity_sellable"] == sellable
    assert item["suggested_order_quantity"] == suggested
    assert (sellable + suggested) > par_level
    if reorder_quantity:
        assert suggested % reorder_quantity == 0


def test_low_stock_pagination_returns_every_product_once_in_sku_order(
    client: TestClient, admin: Headers
) -> None:
    skus = [f"LOW-{n}" for n in (4, 1, 5, 3, 2)]
    for sku in skus:
        create_product(client, admin, sku=sku, par_level=10)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get(LOW_STOCK, params=params, headers=admin)
        assert response.status_code == 200, response.text
        seen.extend(item["sku"] for item in response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen))
    assert [sku for sku in seen if sku in skus] == sorted(skus)


def test_doctor_may_not_read_the_low_stock_report(client: TestClient, doctor: Headers) -> None:
    assert_problem(client.get(LOW_STOCK, headers=doctor), 403, "/problems/forbidden")


@pytest.mark.parametrize("within_days", [-1, 3651, "soon"])
def test_expiring_window_outside_0_to_3650_days_is_422(
    client: TestClient, admin: Headers, within_days: Any
) -> None:
    response = client.get(LOW_STOCK, params={"expiring_within_days": within_days}, headers=admin)

    assert_problem(response, 422, "/problems/validation-error")
