"""The public storefront: a patient orders non-prescription products for themselves."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

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


# -- returning patients: a public answer never says whether a patient exists ---------------------
ANSWER_KEYS = {"order_id", "total_cents", "currency", "expires_at", "checkout_url"}


def _self_order(client: TestClient, product: Any, **person: str) -> Any:
    response = client.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": product["id"], "quantity": 1}], **{**PERSON, **person}},
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == ANSWER_KEYS
    return response.json()


def _patient_of(db: Session, order_id: str) -> Patient:
    order = db.get(Order, order_id)
    assert order is not None
    patient = db.get(Patient, order.patient_id)
    assert patient is not None
    return patient


def _sealed(db: Session, patient_id: Any) -> Any:
    return db.execute(text("SELECT * FROM patients WHERE id = :id"), {"id": patient_id}).one()


def test_a_returning_self_order_patient_orders_again_on_the_same_record(
    client: TestClient, admin: Headers, db: Session
) -> None:
    product = _product(client, admin, "OTC-R1", rx=False, units=5)

    first = _self_order(client, product)
    # The same person, typed a little differently: e-mail case, spacing, phone punctuation.
    second = _self_order(
        client,
        product,
        email=PERSON["email"].upper(),
        name="  robin   EXAMPLE ",
        phone="+1 (555) 0199",
    )

    patient = _patient_of(db, first["order_id"])
    assert _patient_of(db, second["order_id"]).id == patient.id
    assert str(patient.id) not in str(first) + str(second)
    assert db.scalar(select(func.count()).select_from(Patient)) == 1


def test_an_email_with_another_date_of_birth_orders_without_touching_or_revealing_the_patient(
    client: TestClient, admin: Headers, db: Session
) -> None:
    product = _product(client, admin, "OTC-R2", rx=False, units=5)
    first = _self_order(client, product)
    existing = _patient_of(db, first["order_id"])
    stored = _sealed(db, existing.id)

    second = _self_order(client, product, name="Someone Else", date_of_birth="1990-01-01")

    other = _patient_of(db, second["order_id"])
    assert other.id != existing.id and other.doctor_id is None
    assert _sealed(db, existing.id) == stored  # never merged into, never overwritten
    assert str(existing.id) not in str(second)


def test_matching_email_and_birth_date_with_other_details_get_a_record_of_their_own(
    client: TestClient, admin: Headers, db: Session
) -> None:
    """Whoever holds the payment link sees the record's name and phone on the payment page, so
    an anonymous request is only joined to a record whose details it already typed."""
    product = _product(client, admin, "OTC-R3", rx=False, units=5)
    first = _self_order(client, product)
    existing = _patient_of(db, first["order_id"])
    stored = _sealed(db, existing.id)

    second = _self_order(client, product, name="Mallory Guess", phone="+1 555 0100")

    assert _patient_of(db, second["order_id"]).id != existing.id
    assert _sealed(db, existing.id) == stored
    with TestClient(client.app, base_url="https://testserver") as browser:
        opened = browser.get(urlsplit(second["checkout_url"]).path)
        assert opened.status_code == 200, opened.text
        page = browser.post("/pay/verify", data={"date_of_birth": PERSON["date_of_birth"]})
    assert page.status_code == 200 and "Mallory Guess" in page.text
    assert PERSON["name"] not in page.text and "0199" not in page.text


def test_a_doctors_patient_is_never_matched_by_a_self_order(
    client: TestClient, admin: Headers, doctor: Headers, db: Session
) -> None:
    product = _product(client, admin, "OTC-R4", rx=False, units=5)
    owned = client.post("/api/v1/patients", json=PERSON, headers=doctor)
    assert owned.status_code == 201, owned.text
    stored = _sealed(db, owned.json()["id"])

    answer = _self_order(client, product)

    patient = _patient_of(db, answer["order_id"])
    assert str(patient.id) != owned.json()["id"] and patient.doctor_id is None
    assert _sealed(db, owned.json()["id"]) == stored
    assert owned.json()["id"] not in str(answer)


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
