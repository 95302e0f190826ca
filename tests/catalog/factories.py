"""Helpers the catalog, inventory and bad-input tests share: make products and lots, read back
what the database holds."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEntry, Lot, Product, StockMovement

PRODUCTS = "/api/v1/products"


def product_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Amoxicillin 500 mg capsules",
        "description": "Box of 20",
        "price_cents": 1299,
        "par_level": 10,
        "reorder_quantity": 24,
        "requires_prescription": True,
        "perishable": False,
    }
    body.update(overrides)
    return body


def create_product(client: TestClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = client.post(PRODUCTS, json=product_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def receive_lot(
    client: TestClient,
    headers: dict[str, str],
    product_id: str,
    *,
    quantity: int = 10,
    lot_number: str | None = None,
    expiration_date: date | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lot_number": lot_number or f"L{uuid.uuid4().hex[:8]}",
        "quantity": quantity,
    }
    if expiration_date is not None:
        body["expiration_date"] = expiration_date.isoformat()
    response = client.post(f"{PRODUCTS}/{product_id}/lots", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def insert_lot(
    db: Session,
    product_id: str | uuid.UUID,
    *,
    quantity: int,
    reserved: int = 0,
    expiration_date: date | None = None,
    status: str = "available",
) -> Lot:
    """A lot written straight through the ORM, with ledger rows that match its counters.

    For states the API refuses to create (already expired) or has no endpoint for yet
    (reservations). Committed like a request would be, inside the test's rolled-back transaction.
    """
    lot = Lot(
        id=uuid.uuid4(),
        product_id=uuid.UUID(str(product_id)),
        lot_number=f"DB{uuid.uuid4().hex[:8]}",
        expiration_date=expiration_date,
        quantity_on_hand=quantity,
        quantity_reserved=reserved,
        status=status,
    )
    db.add(lot)
    db.flush()
    db.add(
        StockMovement(
            lot_id=lot.id,
            delta_on_hand=quantity,
            delta_reserved=0,
            reason="receipt",
            actor_subject="test:seed",
        )
    )
    if reserved:
        db.add(
            StockMovement(
                lot_id=lot.id,
                delta_on_hand=0,
                delta_reserved=reserved,
                reason="reservation",
                actor_subject="test:seed",
            )
        )
    # Commit (the test's savepoint): a later request that fails rolls back only its own work.
    db.commit()
    return lot


def reserve(db: Session, lot_id: str | uuid.UUID, quantity: int) -> None:
    """Reserve units of an existing lot the way order reservation will: counter plus ledger row."""
    lot = db.get(Lot, uuid.UUID(str(lot_id)), populate_existing=True)
    assert lot is not None
    lot.quantity_reserved += quantity
    db.add(
        StockMovement(
            lot_id=lot.id,
            delta_on_hand=0,
            delta_reserved=quantity,
            reason="reservation",
            actor_subject="test:seed",
        )
    )
    db.commit()


def audit_entries(db: Session, entity_id: str | uuid.UUID) -> list[AuditEntry]:
    return list(
        db.scalars(
            select(AuditEntry).where(AuditEntry.entity_id == str(entity_id)).order_by(AuditEntry.id)
        )
    )


def row_counts(db: Session) -> dict[str, int]:
    """Rows in every table a catalog or inventory write touches."""
    db.expire_all()
    return {
        model.__tablename__: db.scalar(select(func.count()).select_from(model)) or 0
        for model in (Product, Lot, StockMovement, AuditEntry)
    }


def assert_problem(response: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if type_ is not None:
        assert body["type"] == type_
    return body
