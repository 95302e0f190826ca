"""A doctor sees only their own patients and their orders; anyone else's look exactly like ids
that do not exist. Admins see everything."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.identity import Auth
from tests.fixtures.orders import (
    ORDERS,
    allocations_by_lot,
    create_product,
    get_order,
    lot_counters,
    order_body,
    order_row_counts,
    place_order,
    receive_lot,
)
from tests.fixtures.patients import PATIENTS, Headers, Json, audit_entries, create_patient, user_id
from tests.fixtures.problems import assert_problem

Probe = Callable[[TestClient, Headers, str, str], Any]


@pytest.fixture
def second_doctor(client: TestClient, auth: Auth) -> Headers:
    headers = auth("doctor", sub="doctor-second")
    user_id(client, headers)  # provisioned before anything is counted
    return headers


@pytest.fixture
def world(
    client: TestClient, admin: Headers, doctor: Headers, second_doctor: Headers
) -> dict[str, Json]:
    """doctor-main's patient with a pending order, and doctor-second's own patient and order."""
    product = create_product(client, admin)
    lot = receive_lot(client, admin, product["id"], 50)
    patient = create_patient(client, doctor, email="shared@example.com")
    order = place_order(client, doctor, patient["id"], (product["id"], 3))
    own_patient = create_patient(client, second_doctor, email="shared@example.com")
    own_order = place_order(client, second_doctor, own_patient["id"], (product["id"], 1))
    return {
        "product": product,
        "lot": lot,
        "patient": patient,
        "order": order,
        "own_patient": own_patient,
        "own_order": own_order,
    }


def normalised(body: Json, requested_id: str) -> Json:
    """The problem body without `instance`, with the id that was asked for replaced by `{id}`."""
    return {
        key: value.replace(requested_id, "{id}") if isinstance(value, str) else value
        for key, value in body.items()
        if key != "instance"
    }


def _edit_body(product_id: str) -> Json:
    return {"items": [{"product_id": product_id, "quantity": 1}]}


# route name -> (whose id it takes, how to call it)
ROUTES: dict[str, tuple[str, Callable[[TestClient, Headers, str, Json], Any]]] = {
    "GET /patients/{id}": (
        "patient",
        lambda c, h, target, w: c.get(f"{PATIENTS}/{target}", headers=h),
    ),
    "POST /orders for the patient": (
        "patient",
        lambda c, h, target, w: c.post(
            ORDERS, json=order_body(target, (w["product"]["id"], 1)), headers=h
        ),
    ),
    "GET /orders/{id}": (
        "order",
        lambda c, h, target, w: c.get(f"{ORDERS}/{target}", headers=h),
    ),
    "PATCH /orders/{id}": (
        "order",
        lambda c, h, target, w: c.patch(
            f"{ORDERS}/{target}", json=_edit_body(w["product"]["id"]), headers=h
        ),
    ),
    "POST /orders/{id}/cancel": (
        "order",
        lambda c, h, target, w: c.post(f"{ORDERS}/{target}/cancel", headers=h),
    ),
    "POST /orders/{id}/cancel with a reason": (
        "order",
        lambda c, h, target, w: c.post(
            f"{ORDERS}/{target}/cancel", json={"reason": "other", "note": "not mine"}, headers=h
        ),
    ),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_another_doctors_record_gets_the_same_404_as_an_id_that_does_not_exist(
    client: TestClient,
    db: Session,
    doctor: Headers,
    second_doctor: Headers,
    world: dict[str, Json],
    route: str,
) -> None:
    kind, call = ROUTES[route]
    theirs = world[kind]["id"]
    missing = str(uuid.uuid4())
    before = order_row_counts(db)

    for_theirs = call(client, second_doctor, theirs, world)
    for_missing = call(client, second_doctor, missing, world)

    body = assert_problem(for_theirs, 404, "/problems/not-found")
    assert_problem(for_missing, 404, "/problems/not-found")
    assert normalised(body, theirs) == normalised(for_missing.json(), missing)
    assert for_theirs.headers["content-type"] == for_missing.headers["content-type"]
    assert body["instance"] == for_theirs.request.url.path
    # Nothing was read, written or released on the way.
    assert order_row_counts(db) == before
    assert audit_entries(db, world["patient"]["id"], "patient.read") == []
    assert get_order(client, doctor, world["order"]["id"]) == world["order"]
    assert lot_counters(db, world["lot"]["id"]) == (50, 3 + 1)


def test_fulfilling_another_doctors_order_is_refused_exactly_like_any_other_order(
    client: TestClient, second_doctor: Headers, world: dict[str, Json]
) -> None:
    theirs = world["order"]["id"]
    missing = str(uuid.uuid4())

    for_theirs = client.post(f"{ORDERS}/{theirs}/fulfil", headers=second_doctor)
    for_missing = client.post(f"{ORDERS}/{missing}/fulfil", headers=second_doctor)

    body = assert_problem(for_theirs, 403, "/problems/forbidden")
    assert normalised(body, theirs) == normalised(for_missing.json(), missing)


def test_finding_another_doctors_patient_by_email_returns_an_empty_list(
    client: TestClient, db: Session, second_doctor: Headers, auth: Auth, world: dict[str, Json]
) -> None:
    third_doctor = auth("doctor", sub="doctor-third")
    user_id(client, third_doctor)

    shared = client.post(
        f"{PATIENTS}/search", json={"email": "shared@example.com"}, headers=third_doctor
    )
    nobody = client.post(
        f"{PATIENTS}/search", json={"email": "nobody@example.com"}, headers=third_doctor
    )
    # The second doctor, who has a patient with that e-mail too, finds only their own.
    own = client.post(
        f"{PATIENTS}/search", json={"email": "SHARED@example.com"}, headers=second_doctor
    )

    assert shared.status_code == nobody.status_code == 200
    assert shared.json() == nobody.json() == {"items": [], "next_cursor": None}
    assert [p["id"] for p in own.json()["items"]] == [world["own_patient"]["id"]]
    assert audit_entries(db, world["patient"]["id"], "patient.read") == []


def test_a_doctor_lists_only_their_own_patients_and_orders(
    client: TestClient, second_doctor: Headers, world: dict[str, Json]
) -> None:
    patients = client.get(PATIENTS, headers=second_doctor).json()["items"]
    every_order = client.get(ORDERS, headers=second_doctor).json()["items"]
    pending = client.get(ORDERS, params={"status": "pending"}, headers=second_doctor).json()
    by_their_patient = client.get(
        ORDERS, params={"patient_id": world["patient"]["id"]}, headers=second_doctor
    ).json()

    assert [p["id"] for p in patients] == [world["own_patient"]["id"]]
    assert [o["id"] for o in every_order] == [world["own_order"]["id"]]
    assert [o["id"] for o in pending["items"]] == [world["own_order"]["id"]]
    assert by_their_patient == {"items": [], "next_cursor": None}


def test_the_owning_doctor_does_not_see_the_second_doctors_records_either(
    client: TestClient, doctor: Headers, world: dict[str, Json]
) -> None:
    listed = client.get(ORDERS, headers=doctor).json()["items"]
    foreign = client.get(f"{ORDERS}/{world['own_order']['id']}", headers=doctor)

    assert [o["id"] for o in listed] == [world["order"]["id"]]
    assert_problem(foreign, 404, "/problems/not-found")
    assert_problem(
        client.get(f"{PATIENTS}/{world['own_patient']['id']}", headers=doctor),
        404,
        "/problems/not-found",
    )


def test_admin_sees_every_doctors_patients_and_orders(
    client: TestClient, db: Session, admin: Headers, world: dict[str, Json]
) -> None:
    patient_ids = {world["patient"]["id"], world["own_patient"]["id"]}
    order_ids = {world["order"]["id"], world["own_order"]["id"]}

    patients = client.get(PATIENTS, headers=admin).json()["items"]
    by_email = client.post(
        f"{PATIENTS}/search", json={"email": "shared@example.com"}, headers=admin
    )
    listed = client.get(ORDERS, headers=admin).json()["items"]

    assert {p["id"] for p in patients} == patient_ids
    assert {p["id"] for p in by_email.json()["items"]} == patient_ids
    assert {o["id"] for o in listed} == order_ids
    for patient_id in patient_ids:
        response = client.get(f"{PATIENTS}/{patient_id}", headers=admin)
        assert response.status_code == 200, response.text
    for order_id in order_ids:
        assert get_order(client, admin, order_id)["id"] == order_id
    edited = client.patch(
        f"{ORDERS}/{world['order']['id']}", json=_edit_body(world["product"]["id"]), headers=admin
    )
    assert edited.status_code == 200, edited.text
    assert sum(allocations_by_lot(edited.json()).values()) == 1
    cancelled = client.post(f"{ORDERS}/{world['own_order']['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    assert lot_counters(db, world["lot"]["id"]) == (50, 1)
    admin_reads = [
        entry.actor_subject
        for patient_id in patient_ids
        for entry in audit_entries(db, patient_id, "patient.read")
    ]
    assert set(admin_reads) == {"admin-main"}
