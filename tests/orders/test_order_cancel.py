"""Cancelling an order: its reserved stock released once, the reason code kept in clear and the note
encrypted, and a fulfilled order refused."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import phi
from app.orders import service as orders
from tests.fixtures.orders import (
    ORDERS,
    assert_ledger_consistent,
    get_order,
    lot_counters,
    movement_summary,
    movements,
    order_row_counts,
    pay,
    place_order,
    raw_order_row,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json, audit_entries
from tests.fixtures.problems import assert_problem


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
