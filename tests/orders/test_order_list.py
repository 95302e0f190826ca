"""Listing orders: filtered by status and patient, paged with a cursor."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.orders import ORDERS, pay, place_order, receive_lot
from tests.fixtures.patients import Headers, Json, create_patient
from tests.fixtures.problems import assert_problem


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
