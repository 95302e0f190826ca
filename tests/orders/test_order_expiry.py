"""Unpaid orders expire at the end of their payment window, releasing their stock."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.actor import Actor
from app.config import get_settings
from app.models import Order
from app.models.base import utcnow
from app.orders import flows as order_flows
from tests.fixtures.orders import (
    ORDERS,
    assert_ledger_consistent,
    get_order,
    lot_counters,
    movement_summary,
    order_audit_actions,
    pay,
    place_order,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json


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

    assert order_flows.expire_unpaid_orders(db, Actor.system("test"), now=utcnow()) == 0
    expired = order_flows.expire_unpaid_orders(db, Actor.system("test"), now=later)
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
    assert order_flows.expire_unpaid_orders(db, Actor.system("test"), now=later) == 0
    assert_ledger_consistent(db)
