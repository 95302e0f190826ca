"""The public storefront: a patient orders non-prescription products for themselves."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.models import AuditEntry, Order, Patient, StockMovement

Headers = dict[str, str]
PERSON = {
    "name": "Robin Example",
    "email": "robin.example@example.com",
    "phone": "+1 555 0199",
    "date_of_birth": "1988-06-15",
}


def _product(client: TestClient, admin: Headers, sku: str, *, rx: bool, units: int) -> Any:
    product = client.post(
        "/api/v1/products",
        json={"sku": sku, "name": f"Item {sku}", "price_cents": 1250, "requires_prescription": rx},
        headers=admin,
    ).json()
    if units:
        lot = client.post(
            f"/api/v1/products/{product['id']}/lots",
            json={"lot_number": f"L-{sku}", "quantity": units},
            headers=admin,
        )
        assert lot.status_code == 201, lot.text
    return product


def test_public_catalog_lists_only_active_non_prescription_products(
    client: TestClient, admin: Headers
) -> None:
    otc = _product(client, admin, "OTC-1", rx=False, units=3)
    empty = _product(client, admin, "OTC-2", rx=False, units=0)
    _product(client, admin, "RX-1", rx=True, units=3)
    archived = _product(client, admin, "OTC-3", rx=False, units=0)
    client.delete(f"/api/v1/products/{archived['id']}", headers=admin)
    client.patch(f"/api/v1/products/{archived['id']}", json={}, headers=admin)

    response = client.get("/api/v1/public/products")

    assert response.status_code == 200
    listed = {p["sku"]: p for p in response.json()["items"]}
    assert set(listed) == {"OTC-1", "OTC-2"}
    assert listed["OTC-1"]["in_stock"] is True and listed["OTC-2"]["in_stock"] is False
    assert listed["OTC-1"]["id"] == otc["id"] and listed["OTC-2"]["id"] == empty["id"]
    assert "quantity_available" not in listed["OTC-1"]  # stock levels are not public


def test_self_order_creates_a_patient_without_a_doctor_and_a_payable_order(
    client: TestClient, admin: Headers, db: Session
) -> None:
    product = _product(client, admin, "OTC-9", rx=False, units=5)

    response = client.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": product["id"], "quantity": 2}], **PERSON},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["total_cents"] == 2500
    assert body["checkout_url"].startswith("http") and "/pay/" in body["checkout_url"]
    assert set(body) == {"order_id", "total_cents", "currency", "expires_at", "checkout_url"}
    order = db.get(Order, body["order_id"])
    assert order is not None and order.status == "pending" and order.doctor_id is None
    patient = db.get(Patient, order.patient_id)
    assert patient is not None and patient.doctor_id is None
    raw = db.execute(text("SELECT * FROM patients WHERE id = :id"), {"id": patient.id}).one()
    assert not any(PERSON["name"] in str(value) for value in raw)
    reserved = db.scalar(
        select(func.sum(StockMovement.delta_reserved)).where(StockMovement.order_id == order.id)
    )
    assert reserved == 2


def test_prescription_products_cannot_be_self_ordered_and_nothing_is_written(
    client: TestClient, admin: Headers, db: Session
) -> None:
    otc = _product(client, admin, "OTC-5", rx=False, units=5)
    rx = _product(client, admin, "RX-5", rx=True, units=5)
    counts = [db.scalar(select(func.count()).select_from(t)) for t in (Order, Patient, AuditEntry)]

    response = client.post(
        "/api/v1/public/orders",
        json={
            "items": [
                {"product_id": otc["id"], "quantity": 1},
                {"product_id": rx["id"], "quantity": 1},
            ],
            **PERSON,
        },
    )

    # The same order is valid from a doctor: a refusal for who is asking, 403.
    assert response.status_code == 403
    assert response.json()["type"] == "/problems/prescription-required"
    assert "RX-5" in response.json()["detail"]
    after = [db.scalar(select(func.count()).select_from(t)) for t in (Order, Patient, AuditEntry)]
    assert after == counts


def test_self_order_quantities_are_bounded(client: TestClient, admin: Headers) -> None:
    product = _product(client, admin, "OTC-6", rx=False, units=50)

    response = client.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": product["id"], "quantity": 11}], **PERSON},
    )

    assert response.status_code == 422


def test_self_order_with_a_future_date_of_birth_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, admin: Headers, db: Session
) -> None:
    product = _product(client, admin, "OTC-7", rx=False, units=5)
    counts = [db.scalar(select(func.count()).select_from(t)) for t in (Order, Patient, AuditEntry)]

    response = client.post(
        "/api/v1/public/orders",
        json={
            "items": [{"product_id": product["id"], "quantity": 1}],
            **PERSON,
            "date_of_birth": "2999-01-01",
        },
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/validation-error"
    assert [error["field"] for error in problem["errors"]] == ["date_of_birth"]
    assert "past date" in problem["detail"]
    after = [db.scalar(select(func.count()).select_from(t)) for t in (Order, Patient, AuditEntry)]
    assert after == counts
