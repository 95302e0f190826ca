"""Orders: captured prices, first-expiry-first-out reservation, all-or-nothing stock, the state
machine (edit, cancel, pay, fulfil, expire), the ledger, the audit trail and the list."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app import phi
from app.actor import Actor, Role
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.config import get_settings
from app.db import make_engine
from app.errors import InsufficientStock, InvalidStateTransition
from app.inventory import service as inventory
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.inventory.schemas import LotReceive
from app.models import AuditEntry, Lot, Order, User
from app.models.base import utcnow
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.patients import service as patients
from app.patients.schemas import PatientCreate
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import Auth
from tests.fixtures.orders import (
    ORDERS,
    PRODUCTS,
    allocations_by_lot,
    assert_ledger_consistent,
    create_product,
    get_order,
    lot_counters,
    movement_summary,
    movements,
    order_audit_actions,
    order_body,
    order_row_counts,
    pay,
    place_order,
    raw_order_row,
    receive_lot,
    set_lot_status,
)
from tests.fixtures.patients import (
    Headers,
    Json,
    audit_entries,
    create_patient,
    second_phi_key,
    user_id,
)
from tests.fixtures.problems import assert_problem


def min_shelf_life() -> int:
    return get_settings().min_remaining_shelf_life_days


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- creating --------------------------------------------------------------------------------------


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


# -- first expiry, first out -----------------------------------------------------------------------


def test_stock_is_reserved_first_expiry_first_out_and_an_order_splits_across_lots(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    late = receive_lot(client, admin, product["id"], 10, expires_in_days=90)
    never = receive_lot(client, admin, product["id"], 50, expires_in_days=None)
    soonest = receive_lot(client, admin, product["id"], 4, expires_in_days=30)
    middle = receive_lot(client, admin, product["id"], 3, expires_in_days=60)

    order = place_order(client, doctor, patient["id"], (product["id"], 9))

    (item,) = order["items"]
    assert [(a["lot_id"], a["quantity"]) for a in item["allocations"]] == [
        (soonest["id"], 4),
        (middle["id"], 3),
        (late["id"], 2),
    ]
    assert [a["expiration_date"] for a in item["allocations"]] == [
        soonest["expiration_date"],
        middle["expiration_date"],
        late["expiration_date"],
    ]
    assert lot_counters(db, soonest["id"]) == (4, 4)
    assert lot_counters(db, middle["id"]) == (3, 3)
    assert lot_counters(db, late["id"]) == (10, 2)
    assert lot_counters(db, never["id"]) == (50, 0)
    # The answer to the POST (built from memory) is what a read shows.
    assert get_order(client, doctor, order["id"]) == {
        k: v for k, v in order.items() if k != "checkout_url"
    }
    # A second order continues where the first left off: the rest of `late`, then `never`.
    second = place_order(client, doctor, patient["id"], (product["id"], 10))
    assert allocations_by_lot(second) == {late["id"]: 8, never["id"]: 2}
    assert_ledger_consistent(db)


def test_lots_too_close_to_expiry_quarantined_recalled_or_expired_are_skipped(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    days = min_shelf_life()
    assert days >= 1
    too_soon = receive_lot(client, admin, product["id"], 100, expires_in_days=days - 1)
    just_enough = receive_lot(client, admin, product["id"], 2, expires_in_days=days)
    quarantined = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 1, status="quarantined"
    )
    recalled = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 2, status="recalled"
    )
    expired = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 3, status="expired"
    )
    good = receive_lot(client, admin, product["id"], 10, expires_in_days=days + 200)

    order = place_order(client, doctor, patient["id"], (product["id"], 5))

    assert allocations_by_lot(order) == {just_enough["id"]: 2, good["id"]: 3}
    for skipped in (too_soon, quarantined, recalled, expired):
        assert lot_counters(db, skipped["id"]) == (100, 0)
        assert [m.reason for m in movements(db, lot_id=skipped["id"])] == ["receipt"]


# -- not enough stock ------------------------------------------------------------------------------


def test_insufficient_stock_is_409_naming_the_product_and_reserves_nothing_for_any_item(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json
) -> None:
    first, second = sorted(
        (create_product(client, admin) for _ in range(2)), key=lambda p: p["id"]
    )  # `second` is also the one reserved second
    plenty = [receive_lot(client, admin, first["id"], 20, expires_in_days=d) for d in (30, 60)]
    receive_lot(client, admin, second["id"], 3, expires_in_days=100)
    receive_lot(client, admin, second["id"], 50, expires_in_days=100, status="quarantined")
    receive_lot(client, admin, second["id"], 50, expires_in_days=min_shelf_life() - 1)
    user_id(client, doctor)
    before = order_row_counts(db)

    response = client.post(
        ORDERS,
        json=order_body(patient["id"], (first["id"], 25), (second["id"], 4)),
        headers=doctor,
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert body["sku"] == second["sku"]
    assert body["product_id"] == second["id"]
    assert body["requested"] == 4
    assert body["available"] == 3  # only what could actually be reserved
    assert second["sku"] in body["detail"]
    assert order_row_counts(db) == before  # no order, items, allocations, movements or audit
    for lot in plenty:
        assert lot_counters(db, lot["id"]) == (20, 0)
    assert client.get(ORDERS, headers=doctor).json()["items"] == []
    assert_ledger_consistent(db)


def test_available_stock_excludes_units_reserved_by_other_orders(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    place_order(client, doctor, patient["id"], (product["id"], 3))

    response = client.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 3)), headers=doctor
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert (body["requested"], body["available"]) == (3, 2)
    assert lot_counters(db, lot["id"]) == (5, 3)
    assert place_order(client, doctor, patient["id"], (product["id"], 2))["status"] == "pending"
    assert lot_counters(db, lot["id"]) == (5, 5)


def test_product_without_any_stock_is_409_with_nothing_available(
    client: TestClient, doctor: Headers, patient: Json, product: Json
) -> None:
    response = client.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 1)), headers=doctor
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert (body["sku"], body["requested"], body["available"]) == (product["sku"], 1, 0)


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


# -- editing ---------------------------------------------------------------------------------------


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


# -- cancelling ------------------------------------------------------------------------------------


def test_cancelling_a_pending_order_releases_its_reserved_stock(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    first = receive_lot(client, admin, product["id"], 4, expires_in_days=30)
    second = receive_lot(client, admin, product["id"], 10, expires_in_days=60)
    order = place_order(client, doctor, patient["id"], (product["id"], 6))

    response = client.post(
        f"{ORDERS}/{order['id']}/cancel", json={"reason": "patient_request"}, headers=doctor
    )

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None
    assert cancelled["cancellation_reason"] == "patient_request"
    assert cancelled["cancellation_note"] is None
    assert lot_counters(db, first["id"]) == (4, 0)
    assert lot_counters(db, second["id"]) == (10, 0)
    releases = [m for m in movements(db, order_id=order["id"]) if m.reason == "release"]
    assert sorted((str(m.lot_id), m.delta_on_hand, m.delta_reserved) for m in releases) == sorted(
        [(first["id"], 0, -4), (second["id"], 0, -2)]
    )
    assert all(m.actor_subject == "doctor-main" for m in releases)
    # The units can be ordered again.
    assert place_order(client, doctor, patient["id"], (product["id"], 14))["status"] == "pending"
    assert_ledger_consistent(db)


def test_cancelling_without_a_reason_records_the_code_other(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))

    cancelled = client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor).json()

    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation_reason"] == "other"
    assert cancelled["cancellation_note"] is None


def test_a_cancellation_keeps_its_code_in_clear_and_its_note_encrypted_never_in_the_audit_log(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    note = "Stopped after suspected pancreatitis; see chart"

    response = client.post(
        f"{ORDERS}/{order['id']}/cancel",
        json={"reason": "prescriber_change", "note": note},
        headers=doctor,
    )

    assert response.status_code == 200, response.text
    assert response.json()["cancellation_reason"] == "prescriber_change"
    assert response.json()["cancellation_note"] == note
    row = raw_order_row(db, order["id"])
    assert row["cancellation_code"] == "prescriber_change"
    assert row["cancellation_note_encrypted"].startswith("enc1:")
    assert "pancreatitis" not in json.dumps(row, default=str).lower()
    assert (
        phi.decrypt(
            row["cancellation_note_encrypted"],
            orders.cancellation_note_context(uuid.UUID(order["id"])),
        )
        == note
    )
    (entry,) = audit_entries(db, order["id"], "order.cancelled")
    assert entry.after is not None and entry.after["reason"] == "prescriber_change"
    assert entry.after["note"] == "[redacted]"
    every_row = [[e.before, e.after] for e in audit_entries(db, order["id"])]
    assert "pancreatitis" not in json.dumps(every_row).lower()
    read = get_order(client, admin, order["id"])
    assert (read["cancellation_reason"], read["cancellation_note"]) == ("prescriber_change", note)


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "patient changed mind"},  # free text is a note, not a reason
        {"reason": "payment_expired"},  # set by the system, not by staff
        {"reason": "refunded_at_stripe"},
        {"note": "no code"},
        {"reason": "other", "note": ""},
        {"reason": "other", "note": "x" * 1001},
        {"reason": "other", "comment": "unknown field"},
    ],
)
def test_a_cancellation_without_a_staff_reason_code_is_422_and_changes_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    patient: Json,
    product: Json,
    body: Json,
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    before = order_row_counts(db)

    response = client.post(f"{ORDERS}/{order['id']}/cancel", json=body, headers=doctor)

    assert_problem(response, 422, "/problems/validation-error")
    assert order_row_counts(db) == before
    assert raw_order_row(db, order["id"])["status"] == "pending"
    assert lot_counters(db, lot["id"]) == (5, 1)


def test_cancelling_twice_is_409_and_releases_nothing_more(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    assert client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor).status_code == 200
    ledger = movement_summary(db, order["id"])

    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == "cancelled"
    assert movement_summary(db, order["id"]) == ledger
    assert lot_counters(db, lot["id"]) == (5, 0)
    assert_ledger_consistent(db)


def test_cancelling_a_paid_order_releases_its_stock(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    pay(db, order["id"])

    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=admin)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert lot_counters(db, lot["id"]) == (5, 0)
    assert_ledger_consistent(db)


def test_cancelling_a_fulfilled_order_is_409_and_stock_stays_consumed(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    pay(db, order["id"])
    assert client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin).status_code == 200

    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=admin)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == "fulfilled"
    assert lot_counters(db, lot["id"]) == (3, 0)
    assert_ledger_consistent(db)


# -- paying and fulfilling -------------------------------------------------------------------------


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


# -- expiry of unpaid orders -----------------------------------------------------------------------


def test_expiry_cancels_only_pending_orders_past_their_payment_window_and_releases_their_stock(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 20)
    overdue = place_order(client, doctor, patient["id"], (product["id"], 2))
    paid = place_order(client, doctor, patient["id"], (product["id"], 3))
    pay(db, paid["id"])
    cancelled = place_order(client, doctor, patient["id"], (product["id"], 4))
    client.post(f"{ORDERS}/{cancelled['id']}/cancel", headers=doctor)
    extended = place_order(client, doctor, patient["id"], (product["id"], 5))
    row = db.get(Order, uuid.UUID(extended["id"]))
    assert row is not None
    row.expires_at = utcnow() + timedelta(days=30)
    db.commit()
    assert lot_counters(db, lot["id"]) == (20, 2 + 3 + 5)
    cancelled_ledger = movement_summary(db, cancelled["id"])
    later = utcnow() + timedelta(hours=get_settings().order_payment_ttl_hours + 1)

    assert orders.expire_unpaid_orders(db, Actor.system("test"), now=utcnow()) == 0
    expired = orders.expire_unpaid_orders(db, Actor.system("test"), now=later)
    db.commit()

    assert expired == 1
    statuses = {o["id"]: o["status"] for o in client.get(ORDERS, headers=admin).json()["items"]}
    assert statuses == {
        overdue["id"]: "cancelled",
        paid["id"]: "paid",
        cancelled["id"]: "cancelled",
        extended["id"]: "pending",
    }
    expired_view = get_order(client, doctor, overdue["id"])
    assert expired_view["cancellation_reason"] == "payment_expired"
    assert expired_view["cancellation_note"] is None
    assert lot_counters(db, lot["id"]) == (20, 3 + 5)
    assert ("release", lot["id"], 0, -2) in movement_summary(db, overdue["id"])
    assert movement_summary(db, cancelled["id"]) == cancelled_ledger
    assert order_audit_actions(db, overdue["id"])[-1] == ("order.cancelled", "system:test")
    # A second run finds nothing more to do.
    assert orders.expire_unpaid_orders(db, Actor.system("test"), now=later) == 0
    assert_ledger_consistent(db)


# -- audit -----------------------------------------------------------------------------------------


def test_every_order_transition_writes_an_audit_row(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 20)
    shipped = place_order(client, doctor, patient["id"], (product["id"], 2))
    client.patch(
        f"{ORDERS}/{shipped['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 3}]},
        headers=doctor,
    )
    pay(db, shipped["id"])
    client.post(f"{ORDERS}/{shipped['id']}/fulfil", headers=admin)
    dropped = place_order(client, doctor, patient["id"], (product["id"], 1))
    client.post(f"{ORDERS}/{dropped['id']}/cancel", headers=admin)

    assert order_audit_actions(db, shipped["id"]) == [
        ("order.created", "doctor-main"),
        ("order.edited", "doctor-main"),
        ("order.paid", "system:test"),
        ("order.fulfilled", "admin-main"),
    ]
    assert order_audit_actions(db, dropped["id"]) == [
        ("order.created", "doctor-main"),
        ("order.cancelled", "admin-main"),
    ]
    (edited,) = audit_entries(db, shipped["id"], "order.edited")
    assert edited.before is not None and edited.after is not None
    assert edited.before["items"][0]["quantity"] == 2
    assert edited.after["items"][0]["quantity"] == 3
    assert edited.after["total_cents"] == 3 * 1299


def test_order_note_is_encrypted_at_rest_and_redacted_in_the_audit_log(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    note = "Allergic to penicillin; deliver before 9 am"

    order = place_order(client, doctor, patient["id"], (product["id"], 1), note=note)

    assert order["note"] == note
    stored = db.execute(
        text("SELECT note_encrypted FROM orders WHERE id = :id"), {"id": uuid.UUID(order["id"])}
    ).scalar_one()
    assert stored.startswith("enc1:")
    assert "penicillin" not in stored.lower()
    assert phi.decrypt(stored, orders.note_context(uuid.UUID(order["id"]))) == note
    (created,) = audit_entries(db, order["id"], "order.created")
    assert "penicillin" not in json.dumps([created.before, created.after]).lower()
    assert get_order(client, doctor, order["id"])["note"] == note
    (read,) = audit_entries(db, order["id"], "order.read")
    assert read.actor_subject == "doctor-main"


def test_reading_an_order_writes_one_order_read_row_naming_it_even_without_a_note(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    """An order's items are a patient's medications: every read of one is a PHI read."""
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    assert order["note"] is None
    assert audit_entries(db, order["id"], "order.read") == []

    get_order(client, doctor, order["id"])
    get_order(client, admin, order["id"])

    reads = audit_entries(db, order["id"], "order.read")
    assert [(r.actor_subject, r.entity_type, r.entity_id) for r in reads] == [
        ("doctor-main", "order", order["id"]),
        ("admin-main", "order", order["id"]),
    ]
    assert all(r.request_id for r in reads)


def test_a_refused_order_read_is_not_audited_as_a_read(
    client: TestClient, db: Session, admin: Headers, auth: Auth, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(
        client, auth("doctor", sub="doctor-main"), patient["id"], (product["id"], 1)
    )
    stranger = auth("doctor", sub="doctor-stranger")

    assert client.get(f"{ORDERS}/{order['id']}", headers=stranger).status_code == 404

    assert audit_entries(db, order["id"], "order.read") == []


def order_list_reads(db: Session) -> list[Any]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEntry).where(AuditEntry.action == "order.listed").order_by(AuditEntry.id)
        )
    )


def test_each_order_list_read_writes_one_audit_row_naming_the_ids_returned(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, auth: Auth, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 50)
    mine = create_patient(client, doctor)
    second_doctor = auth("doctor", sub="doctor-second")
    theirs = create_patient(client, second_doctor)
    first = place_order(client, doctor, mine["id"], (product["id"], 1))
    second = place_order(client, doctor, mine["id"], (product["id"], 1))
    foreign = place_order(client, second_doctor, theirs["id"], (product["id"], 1))
    assert order_list_reads(db) == []

    page = client.get(ORDERS, params={"limit": 1}, headers=doctor).json()
    rest = client.get(
        ORDERS, params={"limit": 1, "cursor": page["next_cursor"]}, headers=doctor
    ).json()
    everything = client.get(ORDERS, params={"status": "pending"}, headers=admin).json()
    nothing = client.get(ORDERS, params={"status": "paid"}, headers=doctor).json()

    rows = order_list_reads(db)
    assert [(r.actor_subject, r.entity_type) for r in rows] == [
        ("doctor-main", "order"),
        ("doctor-main", "order"),
        ("admin-main", "order"),
        ("doctor-main", "order"),
    ]
    listed = [r.after["order_ids"] for r in rows if r.after is not None]
    assert listed == [
        [o["id"] for o in page["items"]],
        [o["id"] for o in rest["items"]],
        [o["id"] for o in everything["items"]],
        [],
    ]
    # One order a page, both of the doctor's own (one transaction here: same created_at).
    assert sorted(listed[0] + listed[1]) == sorted([first["id"], second["id"]])
    assert set(listed[2]) >= {first["id"], second["id"], foreign["id"]}
    assert nothing["items"] == []
    assert rows[2].after is not None and rows[2].after["status"] == "pending"


def test_key_rotation_reencrypts_order_notes_and_cancellation_notes(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1), note="Take with food")
    client.post(
        f"{ORDERS}/{order['id']}/cancel",
        json={"reason": "prescriber_change", "note": "Switched after a rash"},
        headers=doctor,
    )
    plain_order = place_order(client, doctor, patient["id"], (product["id"], 1))
    order_id = uuid.UUID(order["id"])

    with second_phi_key() as k2_material:
        assert orders.rotate_order_notes(db, batch=1) == 1
        db.commit()

        row = raw_order_row(db, order["id"])
        only_k2 = phi.PhiKeys.parse(f"k2:{k2_material}", "k2", get_settings().phi_hash_key)
        assert phi.decrypt(row["note_encrypted"], orders.note_context(order_id), only_k2) == (
            "Take with food"
        )
        assert phi.decrypt(
            row["cancellation_note_encrypted"], orders.cancellation_note_context(order_id), only_k2
        ) == ("Switched after a rash")
        assert raw_order_row(db, plain_order["id"])["note_encrypted"] is None
        assert orders.rotate_order_notes(db) == 0
        assert get_order(client, admin, order["id"])["cancellation_note"] == (
            "Switched after a rash"
        )


# -- listing ---------------------------------------------------------------------------------------


def test_listing_orders_filters_by_status_and_patient(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 50)
    other_patient = create_patient(client, doctor)
    a = place_order(client, doctor, patient["id"], (product["id"], 1))
    b = place_order(client, doctor, patient["id"], (product["id"], 1))
    c = place_order(client, doctor, other_patient["id"], (product["id"], 1))
    client.post(f"{ORDERS}/{b['id']}/cancel", headers=doctor)
    pay(db, c["id"])

    def listed(**params: Any) -> set[str]:
        response = client.get(ORDERS, params=params, headers=doctor)
        assert response.status_code == 200, response.text
        return {o["id"] for o in response.json()["items"]}

    assert listed() == {a["id"], b["id"], c["id"]}
    assert listed(status="pending") == {a["id"]}
    assert listed(status="cancelled") == {b["id"]}
    assert listed(status="paid") == {c["id"]}
    assert listed(status="fulfilled") == set()
    assert listed(patient_id=patient["id"]) == {a["id"], b["id"]}
    assert listed(patient_id=other_patient["id"]) == {c["id"]}
    assert listed(patient_id=patient["id"], status="cancelled") == {b["id"]}
    assert listed(patient_id=str(uuid.uuid4())) == set()
    (summary,) = client.get(ORDERS, params={"status": "paid"}, headers=doctor).json()["items"]
    assert summary["patient_id"] == other_patient["id"]
    assert summary["total_cents"] == 1299
    assert "items" not in summary


@pytest.mark.parametrize("params", [{"status": "shipped"}, {"patient_id": "nope"}])
def test_listing_orders_with_an_invalid_filter_is_422(
    client: TestClient, doctor: Headers, params: dict[str, str]
) -> None:
    assert_problem(client.get(ORDERS, params=params, headers=doctor), 422)


def test_listing_orders_pages_with_a_cursor(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 50)
    created = {
        place_order(client, doctor, patient["id"], (product["id"], 1))["id"] for _ in range(5)
    }

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(ORDERS, params=params, headers=doctor).json()
        pages += 1
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10

    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == created
    assert pages == 3
    bad = client.get(ORDERS, params={"cursor": "not-a-cursor"}, headers=doctor)
    assert_problem(bad, 400, "/problems/invalid-cursor")


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_orders_for_the_last_units_never_oversell(fresh_db: TestDatabase) -> None:
    engine = make_engine(fresh_db.app_url, pool_size=6)
    factory = sessionmaker(engine, expire_on_commit=False)
    system = Actor.system("test")
    try:
        with factory() as session:
            doctor_row = User(email="race@example.com", role="doctor", oidc_subject="doctor-race")
            session.add(doctor_row)
            session.flush()
            actor = Actor(subject="doctor-race", role=Role.DOCTOR, user_id=doctor_row.id)
            patient = patients.create_patient(
                session,
                actor,
                PatientCreate(
                    name="Race Patient",
                    email="race.patient@example.com",
                    phone="+1 555 010 0100",
                    date_of_birth=date(1970, 1, 1),
                ),
            )
            product = catalog.create_product(
                session, system, ProductCreate(sku="RACE-1", name="Race", price_cents=100)
            )
            lots = [
                inventory.receive_lot(
                    session,
                    system,
                    product.id,
                    LotReceive(
                        lot_number=f"RACE-{n}",
                        quantity=3,
                        expiration_date=today() + timedelta(days=30 * n),
                    ),
                )
                for n in (1, 2)
            ]
            session.commit()

        threads = 6
        barrier = threading.Barrier(threads)

        def attempt(_: int) -> str:
            with factory() as session:
                barrier.wait(timeout=30)
                try:
                    orders.create_order(
                        session,
                        actor,
                        OrderCreate(
                            patient_id=patient.id,
                            items=[OrderLine(product_id=product.id, quantity=2)],
                        ),
                    )
                    session.commit()
                    return "ok"
                except InsufficientStock:
                    session.rollback()
                    return "short"

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(attempt, range(threads)))

        assert sorted(results) == ["ok"] * 3 + ["short"] * 3  # 6 units, 2 each
        with factory() as session:
            reserved = {
                lot.lot_number: (lot.quantity_on_hand, lot.quantity_reserved)
                for lot in session.scalars(select(Lot).where(Lot.id.in_([x.id for x in lots])))
            }
            assert reserved == {"RACE-1": (3, 3), "RACE-2": (3, 3)}
            assert session.scalar(select(func.count()).select_from(Order)) == 3
            assert lots_disagreeing_with_ledger(session) == []
    finally:
        engine.dispose()
