"""Helpers for the order tests: products, lots, orders, and what the database holds about them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.models import AuditEntry, Lot, LotAllocation, Order, OrderItem, StockMovement
from app.orders import service as orders
from tests.patients.factories import Headers, Json

PRODUCTS = "/api/v1/products"
LOTS = "/api/v1/lots"
ORDERS = "/api/v1/orders"


def create_product(client: TestClient, admin: Headers, **overrides: Any) -> Json:
    body: Json = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Amoxicillin 500 mg capsules",
        "price_cents": 1299,
        "perishable": False,
    }
    body.update(overrides)
    response = client.post(PRODUCTS, json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def receive_lot(
    client: TestClient,
    admin: Headers,
    product_id: str,
    quantity: int,
    *,
    expires_in_days: int | None = 365,
    status: str = "available",
) -> Json:
    body: Json = {"lot_number": f"L-{uuid.uuid4().hex[:8]}", "quantity": quantity}
    if expires_in_days is not None:
        body["expiration_date"] = (today() + timedelta(days=expires_in_days)).isoformat()
    response = client.post(f"{PRODUCTS}/{product_id}/lots", json=body, headers=admin)
    assert response.status_code == 201, response.text
    lot: Json = response.json()
    if status != "available":
        set_lot_status(client, admin, lot["id"], status)
    return lot


def set_lot_status(client: TestClient, admin: Headers, lot_id: str, status: str) -> None:
    response = client.post(
        f"{LOTS}/{lot_id}/status",
        json={"status": status, "reason": f"test: {status}"},
        headers=admin,
    )
    assert response.status_code == 200, response.text


def order_body(patient_id: str, *lines: tuple[str, int], **extra: Any) -> Json:
    return {
        "patient_id": patient_id,
        "items": [{"product_id": product_id, "quantity": qty} for product_id, qty in lines],
        **extra,
    }


def place_order(
    client: TestClient, headers: Headers, patient_id: str, *lines: tuple[str, int], **extra: Any
) -> Json:
    """The created order as GET shows it (the one-time `checkout_url` is checked elsewhere)."""
    response = client.post(ORDERS, json=order_body(patient_id, *lines, **extra), headers=headers)
    assert response.status_code == 201, response.text
    order: Json = response.json()
    assert order.pop("checkout_url").startswith("http")
    return order


def get_order(client: TestClient, headers: Headers, order_id: str) -> Json:
    response = client.get(f"{ORDERS}/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    order: Json = response.json()
    assert "checkout_url" not in order  # a link's token is shown only when issued
    return order


def pay(db: Session, order_id: str) -> None:
    """Payments arrive later through their own API; the service call stands in for it."""
    orders.mark_paid(db, Actor.system("test"), uuid.UUID(order_id))
    db.commit()


def lot_counters(db: Session, lot_id: str) -> tuple[int, int]:
    """(on hand, reserved) as the database holds them now."""
    lot = db.get(Lot, uuid.UUID(lot_id), populate_existing=True)
    assert lot is not None
    return lot.quantity_on_hand, lot.quantity_reserved


def allocations_by_lot(order: Json) -> dict[str, int]:
    return {a["lot_id"]: a["quantity"] for item in order["items"] for a in item["allocations"]}


def movements(db: Session, *, order_id: str | None = None, lot_id: str | None = None) -> list[Any]:
    db.expire_all()
    query = select(StockMovement).order_by(StockMovement.seq)
    if order_id is not None:
        query = query.where(StockMovement.order_id == uuid.UUID(order_id))
    if lot_id is not None:
        query = query.where(StockMovement.lot_id == uuid.UUID(lot_id))
    return list(db.scalars(query))


def movement_summary(db: Session, order_id: str) -> list[tuple[str, str, int, int]]:
    return sorted(
        (m.reason, str(m.lot_id), m.delta_on_hand, m.delta_reserved)
        for m in movements(db, order_id=order_id)
    )


def order_audit_actions(db: Session, order_id: str) -> list[tuple[str, str]]:
    """The order's audited changes (reads, `order.read`, left out), oldest first."""
    db.expire_all()
    return [
        (e.action, e.actor_subject)
        for e in db.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity_type == "order",
                AuditEntry.entity_id == order_id,
                AuditEntry.action.startswith("order."),
                AuditEntry.action != "order.read",
            )
            .order_by(AuditEntry.id)
        )
    ]


def order_row_counts(db: Session) -> dict[str, int]:
    db.expire_all()
    return {
        model.__tablename__: db.scalar(select(func.count()).select_from(model)) or 0
        for model in (Order, OrderItem, LotAllocation, StockMovement, AuditEntry)
    }


def assert_ledger_consistent(db: Session) -> None:
    db.expire_all()
    assert lots_disagreeing_with_ledger(db) == []
