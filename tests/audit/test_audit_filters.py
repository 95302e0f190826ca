"""The audit log filtered by action and time, and the access review: who read PHI in a period,
per reader and role (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.identity import Auth
from tests.fixtures.orders import ORDERS, create_product, place_order, receive_lot
from tests.fixtures.patients import PATIENTS, Headers, Json, create_patient
from tests.fixtures.problems import assert_problem

AUDIT = "/api/v1/audit"


@pytest.fixture
def patient(client: TestClient, doctor: Headers) -> Json:
    return create_patient(client, doctor)


@pytest.fixture
def product(client: TestClient, admin: Headers) -> Json:
    return create_product(client, admin)


def log(client: TestClient, admin: Headers, **params: Any) -> list[Json]:
    response = client.get(AUDIT, params={"limit": 200, **params}, headers=admin)
    assert response.status_code == 200, response.text
    items: list[Json] = response.json()["items"]
    return items


def test_the_log_filters_by_exact_action_by_family_by_role_and_by_time(
    client: TestClient, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    assert client.get(f"{ORDERS}/{order['id']}", headers=doctor).status_code == 200
    now = datetime.now(UTC)

    created = log(client, admin, action="order.created", entity_id=order["id"])
    family = {row["action"] for row in log(client, admin, action="order.", entity_id=order["id"])}
    by_doctor = log(client, admin, actor_role="doctor", entity_id=order["id"])
    later = log(client, admin, occurred_from=(now + timedelta(minutes=1)).isoformat())
    window = log(
        client,
        admin,
        entity_id=order["id"],
        occurred_from=(now - timedelta(minutes=5)).isoformat(),
        occurred_to=(now + timedelta(minutes=5)).isoformat(),
    )
    inverted = log(
        client,
        admin,
        occurred_from=(now + timedelta(minutes=5)).isoformat(),
        occurred_to=(now - timedelta(minutes=5)).isoformat(),
    )

    assert [row["action"] for row in created] == ["order.created"]
    assert {"order.created", "order.read"} <= family
    assert all(a.startswith("order.") for a in family)
    assert by_doctor and all(row["actor_role"] == "doctor" for row in by_doctor)
    assert later == [] and inverted == []
    assert {row["action"] for row in window} >= {"order.created", "checkout_link.issued"}


@pytest.mark.parametrize(
    "params",
    [
        {"action": "ORDER.created"},
        {"action": "x" * 40},
        {"actor_role": "root"},
        {"occurred_from": "2026-12-01T10:00:00"},  # no offset: whose clock?
        {"occurred_to": "yesterday"},
        {"occurred_to": "0.5"},  # not seconds since 1970
    ],
)
def test_bad_filters_are_422(client: TestClient, admin: Headers, params: dict[str, str]) -> None:
    assert_problem(client.get(AUDIT, params=params, headers=admin), 422)


def test_the_access_review_counts_phi_reads_per_reader_and_role(
    client: TestClient,
    admin: Headers,
    doctor: Headers,
    auth: Auth,
    patient: Json,
    product: Json,
) -> None:
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    client.get(f"{ORDERS}/{order['id']}", headers=doctor)
    for _ in range(2):
        client.get(f"{PATIENTS}/{patient['id']}", headers=doctor)
    client.get(ORDERS, headers=admin)
    client.get(f"{ORDERS}/{order['id']}", headers=admin)
    now = datetime.now(UTC)
    period = {
        "occurred_from": (now - timedelta(minutes=5)).isoformat(),
        "occurred_to": (now + timedelta(minutes=5)).isoformat(),
    }

    response = client.get(f"{AUDIT}/phi-reads", params=period, headers=admin)

    assert response.status_code == 200, response.text
    readers = {(r["actor_subject"], r["actor_role"]): r for r in response.json()["readers"]}
    as_doctor = readers[("doctor-main", "doctor")]
    # Creating the patient is not a read; the two reads of one patient are one patient.
    assert (as_doctor["patients_read"], as_doctor["orders_read"]) == (1, 1)
    assert as_doctor["reads"] == 3
    as_admin = readers[("admin-main", "admin")]
    assert (as_admin["orders_read"], as_admin["lists_read"], as_admin["patients_read"]) == (1, 1, 0)
    only_admins = client.get(
        f"{AUDIT}/phi-reads", params={**period, "actor_role": "admin"}, headers=admin
    ).json()["readers"]
    assert {r["actor_role"] for r in only_admins} == {"admin"}
    earlier = client.get(
        f"{AUDIT}/phi-reads",
        params={"occurred_from": "2020-01-01T00:00:00Z", "occurred_to": "2020-02-01T00:00:00Z"},
        headers=admin,
    ).json()
    assert earlier["readers"] == []
    # Doctors may not review anyone's reads; the period is required.
    assert_problem(client.get(f"{AUDIT}/phi-reads", params=period, headers=doctor), 403)
    assert_problem(client.get(f"{AUDIT}/phi-reads", headers=admin), 422)
    assert_problem(client.get(f"{AUDIT}/phi-reads", params=period, headers=auth("doctor")), 403)
