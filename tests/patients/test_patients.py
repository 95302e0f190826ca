"""Patients: ownership, look-up by e-mail, PHI encrypted at rest (bound to its row), key
rotation, and an audit row for every PHI read."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import phi
from app.config import get_settings
from app.models import Patient
from app.models.patient import PHI_FIELDS
from app.patients.service import phi_context, rotate_keys
from tests.fixtures.identity import Auth
from tests.fixtures.patients import (
    PATIENTS,
    Headers,
    Json,
    audit_entries,
    create_patient,
    patient_and_audit_counts,
    patient_body,
    second_phi_key,
    user_id,
)
from tests.fixtures.problems import assert_problem


def raw_patient_row(db: Session, patient_id: str) -> dict[str, Any]:
    row = db.execute(
        text("SELECT * FROM patients WHERE id = :id"), {"id": uuid.UUID(patient_id)}
    ).one()
    return dict(row._mapping)


def phi_values(patient: Json) -> list[str]:
    return [patient["name"], patient["email"], patient["phone"], patient["date_of_birth"]]


# -- creating --------------------------------------------------------------------------------------


def test_doctor_creates_a_patient_they_own_and_can_read_it_back(
    client: TestClient, doctor: Headers
) -> None:
    doctor_id = user_id(client, doctor)
    body = patient_body(email="Jane.Roe@Example.com")

    response = client.post(PATIENTS, json=body, headers=doctor)

    assert response.status_code == 201, response.text
    patient = response.json()
    assert patient["doctor_id"] == doctor_id
    assert patient["name"] == body["name"]
    assert patient["email"] == "jane.roe@example.com"  # normalised
    assert patient["phone"] == body["phone"]
    assert patient["date_of_birth"] == body["date_of_birth"]
    read = client.get(f"{PATIENTS}/{patient['id']}", headers=doctor)
    assert read.status_code == 200, read.text
    assert read.json() == patient


def test_doctor_may_name_themselves_as_owner(client: TestClient, doctor: Headers) -> None:
    doctor_id = user_id(client, doctor)

    patient = create_patient(client, doctor, doctor_id=doctor_id)

    assert patient["doctor_id"] == doctor_id


def test_doctor_naming_another_doctor_as_owner_is_403_and_writes_nothing(
    client: TestClient, db: Session, doctor: Headers, auth: Auth
) -> None:
    other_doctor_id = user_id(client, auth("doctor", sub="doctor-other"))
    user_id(client, doctor)
    before = patient_and_audit_counts(db)

    response = client.post(PATIENTS, json=patient_body(doctor_id=other_doctor_id), headers=doctor)

    assert_problem(response, 403, "/problems/forbidden")
    assert patient_and_audit_counts(db) == before


def test_admin_creates_a_patient_for_the_active_doctor_they_name(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    doctor_id = user_id(client, doctor)

    response = client.post(PATIENTS, json=patient_body(doctor_id=doctor_id), headers=admin)

    assert response.status_code == 201, response.text
    patient = response.json()
    assert patient["doctor_id"] == doctor_id
    # The owning doctor sees the patient; the creation is audited as the admin's act.
    assert client.get(f"{PATIENTS}/{patient['id']}", headers=doctor).status_code == 200
    (created,) = audit_entries(db, patient["id"], "patient.created")
    assert created.actor_subject == "admin-main"
    assert created.after is not None
    assert created.after["doctor_id"] == doctor_id


@pytest.mark.parametrize(
    ("owner", "status", "problem_type"),
    [
        # Who owns a patient depends on the caller's role, which no schema can say: 403.
        ("missing", 403, "/problems/forbidden"),
        ("unknown user", 404, "/problems/not-found"),
        ("an admin", 404, "/problems/not-found"),
        ("inactive doctor", 409, "/problems/conflict"),
        ("malformed", 422, "/problems/validation-error"),
    ],
)
def test_admin_must_name_an_active_doctor_as_owner(
    client: TestClient,
    db: Session,
    admin: Headers,
    auth: Auth,
    owner: str,
    status: int,
    problem_type: str,
) -> None:
    admin_id = user_id(client, admin)
    inactive_id = user_id(client, auth("doctor", sub="doctor-leaving"))
    assert (
        client.patch(
            f"/api/v1/users/{inactive_id}", json={"active": False}, headers=admin
        ).status_code
        == 200
    )
    body = patient_body()
    if owner != "missing":
        body["doctor_id"] = {
            "unknown user": str(uuid.uuid4()),
            "an admin": admin_id,
            "inactive doctor": inactive_id,
            "malformed": "not-a-uuid",
        }[owner]
    before = patient_and_audit_counts(db)

    response = client.post(PATIENTS, json=body, headers=admin)

    assert_problem(response, status, problem_type)
    assert patient_and_audit_counts(db) == before


# -- finding by e-mail -----------------------------------------------------------------------------

SEARCH = f"{PATIENTS}/search"


def search(client: TestClient, headers: Headers, email: str, **params: Any) -> Any:
    """The e-mail travels in the body, never in the URL (access and proxy logs keep URLs)."""
    return client.post(SEARCH, json={"email": email}, params=params, headers=headers)


def test_search_by_email_audits_a_phi_read_of_each_patient_found(
    client: TestClient, db: Session, doctor: Headers, admin: Headers
) -> None:
    wanted = create_patient(client, doctor, email="audited.search@example.com")
    create_patient(client, doctor)

    found = search(client, admin, "audited.search@example.com")

    assert [p["id"] for p in found.json()["items"]] == [wanted["id"]]
    (read,) = audit_entries(db, wanted["id"], "patient.read")
    assert read.actor_subject == "admin-main"
    assert "audited.search" not in json.dumps([read.before, read.after]).lower()


@pytest.mark.parametrize(
    "query",
    [
        {"email": "someone@example.com"},
        {"email": "someone@example.com", "limit": 5},
        {"email": ""},
        {"EMAIL": "someone@example.com"},
    ],
)
def test_an_email_in_the_url_is_refused_with_a_clear_400_and_nothing_is_read(
    client: TestClient, db: Session, doctor: Headers, query: dict[str, Any]
) -> None:
    create_patient(client, doctor, email="someone@example.com")
    before = patient_and_audit_counts(db)

    response = client.get(PATIENTS, params=query, headers=doctor)

    body = assert_problem(response, 400, "/problems/phi-in-url")
    assert "/patients/search" in body["detail"]
    assert "someone@" not in response.text
    assert patient_and_audit_counts(db) == before


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-address"}, {}, {"email": "a@example.com", "name": "Jane"}, {"email": 7}],
)
def test_a_search_with_an_invalid_body_is_422(
    client: TestClient, doctor: Headers, body: dict[str, Any]
) -> None:
    assert_problem(client.post(SEARCH, json=body, headers=doctor), 422)


def test_find_by_email_is_case_insensitive_and_uses_the_keyed_hash(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    wanted = create_patient(client, doctor, email="Mixed.Case@Example.com")
    create_patient(client, doctor)  # someone else, not to be returned

    response = search(client, doctor, "MIXED.case@example.COM")

    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["items"]] == [wanted["id"]]
    assert response.json()["items"][0] == wanted
    row = raw_patient_row(db, wanted["id"])
    assert row["email_hash"] == phi.lookup_hash("mixed.case@example.com")
    assert "mixed.case" not in row["email_hash"].lower()


def test_find_by_an_email_nobody_has_returns_an_empty_list(
    client: TestClient, doctor: Headers
) -> None:
    create_patient(client, doctor, email="someone@example.com")

    response = search(client, doctor, "nobody@example.com")

    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


def test_duplicate_email_for_the_same_doctor_is_409_whatever_its_case(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    first = create_patient(client, doctor, email="twin@example.com")
    before = patient_and_audit_counts(db)

    response = client.post(PATIENTS, json=patient_body(email="  TWIN@example.com "), headers=doctor)

    body = assert_problem(response, 409, "/problems/duplicate")
    assert body["patient_id"] == first["id"]
    assert patient_and_audit_counts(db) == before


def test_another_doctor_may_have_a_patient_with_the_same_email(
    client: TestClient, doctor: Headers, auth: Auth
) -> None:
    second_doctor = auth("doctor", sub="doctor-second")
    mine = create_patient(client, doctor, email="shared@example.com")

    theirs = create_patient(client, second_doctor, email="shared@example.com")

    assert theirs["id"] != mine["id"]
    assert theirs["doctor_id"] != mine["doctor_id"]
    found = search(client, second_doctor, "shared@example.com")
    assert [p["id"] for p in found.json()["items"]] == [theirs["id"]]
    assert [p["id"] for p in search(client, doctor, "shared@example.com").json()["items"]] == [
        mine["id"]
    ]


def test_patient_list_is_paginated_with_a_cursor(client: TestClient, doctor: Headers) -> None:
    created = {create_patient(client, doctor)["id"] for _ in range(3)}

    first = client.get(PATIENTS, params={"limit": 2}, headers=doctor).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    second = client.get(
        PATIENTS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=doctor
    ).json()

    assert second["next_cursor"] is None
    seen = [p["id"] for p in first["items"] + second["items"]]
    assert len(seen) == len(set(seen)) == 3
    assert set(seen) == created


# -- encryption at rest ----------------------------------------------------------------------------


def test_patient_row_holds_no_plaintext_phi_in_any_column(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(
        client,
        doctor,
        name="Margaret Hamilton-Smythe",
        email="Margaret.Hamilton@Example.com",
        phone="+44 20 7946 0958",
        date_of_birth="1936-08-17",
    )
    row = raw_patient_row(db, patient["id"])
    forbidden = [
        "Margaret Hamilton-Smythe",
        "Hamilton-Smythe",
        "margaret.hamilton@example.com",
        "@example.com",
        "+44 20 7946 0958",
        "7946 0958",
        "1936-08-17",
        "19360817",
        "17/08/1936",
    ]

    for column, value in row.items():
        as_text = str(value).lower()
        for plaintext in forbidden:
            assert plaintext.lower() not in as_text, f"{column} holds {plaintext!r}"
    for field in PHI_FIELDS:
        value = row[f"{field}_encrypted"]
        assert value.startswith("enc1:"), field
        assert phi.decrypt(value, phi_context(uuid.UUID(patient["id"]), field)) == (
            patient[field] if field != "email" else "margaret.hamilton@example.com"
        )
    # The same plaintext encrypts differently each time (random nonce).
    other = create_patient(client, doctor, name="Margaret Hamilton-Smythe")
    assert raw_patient_row(db, other["id"])["name_encrypted"] != row["name_encrypted"]


def test_a_ciphertext_copied_into_another_patient_row_does_not_decrypt(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    alice = create_patient(client, doctor, name="Alice Example")
    bob = create_patient(client, doctor, name="Bob Example")
    alice_id, bob_id = uuid.UUID(alice["id"]), uuid.UUID(bob["id"])
    alice_name = raw_patient_row(db, alice["id"])["name_encrypted"]
    assert phi.decrypt(alice_name, phi_context(alice_id, "name")) == "Alice Example"

    db.execute(
        text("UPDATE patients SET name_encrypted = :value WHERE id = :id"),
        {"value": alice_name, "id": bob_id},
    )
    copied = raw_patient_row(db, bob["id"])["name_encrypted"]

    assert copied == alice_name
    with pytest.raises(phi.PhiKeyError):
        phi.decrypt(copied, phi_context(bob_id, "name"))
    # Nor into another column of the same row.
    with pytest.raises(phi.PhiKeyError):
        phi.decrypt(alice_name, phi_context(alice_id, "email"))


def test_a_tampered_ciphertext_does_not_decrypt(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(client, doctor)
    value = raw_patient_row(db, patient["id"])["phone_encrypted"]
    prefix, key_id, blob = value.split(":", 2)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01
    tampered = f"{prefix}:{key_id}:{base64.b64encode(bytes(raw)).decode()}"

    with pytest.raises(phi.PhiKeyError):
        phi.decrypt(tampered, phi_context(uuid.UUID(patient["id"]), "phone"))


# -- key rotation ----------------------------------------------------------------------------------


def encrypted_columns(db: Session) -> dict[uuid.UUID, dict[str, str]]:
    db.expire_all()
    return {
        p.id: {f: getattr(p, f"{f}_encrypted") for f in PHI_FIELDS}
        for p in db.scalars(select(Patient))
    }


def test_key_rotation_reencrypts_old_values_to_the_active_key_and_a_rerun_changes_nothing(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patients = [create_patient(client, doctor) for _ in range(3)]
    before = encrypted_columns(db)
    assert {phi.key_id_of(v) for cols in before.values() for v in cols.values()} == {"dev1"}
    hashes = {p.id: p.email_hash for p in db.scalars(select(Patient))}

    with second_phi_key() as k2_material:
        changed = rotate_keys(db, batch=2)  # more than one batch
        db.commit()

        assert changed == len(before)
        after = encrypted_columns(db)
        only_k2 = phi.PhiKeys.parse(f"k2:{k2_material}", "k2", get_settings().phi_hash_key)
        for patient in patients:
            patient_id = uuid.UUID(patient["id"])
            for field in PHI_FIELDS:
                value = after[patient_id][field]
                assert phi.key_id_of(value) == "k2"
                assert value != before[patient_id][field]
                # Decryptable with k2 alone: really re-sealed, not just relabelled.
                plain = phi.decrypt(value, phi_context(patient_id, field), only_k2)
                assert plain == str(patient[field])
            read = client.get(f"{PATIENTS}/{patient['id']}", headers=doctor)
            assert read.status_code == 200, read.text
            assert read.json() == patient
        assert {p.id: p.email_hash for p in db.scalars(select(Patient))} == hashes
        found = search(client, doctor, patients[0]["email"])
        assert [p["id"] for p in found.json()["items"]] == [patients[0]["id"]]

        assert rotate_keys(db) == 0
        assert encrypted_columns(db) == after

        newcomer = create_patient(client, doctor)
        newcomer_row = raw_patient_row(db, newcomer["id"])
        assert all(phi.key_id_of(newcomer_row[f"{f}_encrypted"]) == "k2" for f in PHI_FIELDS)
    assert phi.phi_keys().active_key_id == get_settings().phi_active_key_id


# -- audit -----------------------------------------------------------------------------------------


def test_reading_a_patient_writes_a_patient_read_audit_row_naming_the_actor(
    client: TestClient, db: Session, doctor: Headers, admin: Headers
) -> None:
    patient = create_patient(client, doctor)
    assert audit_entries(db, patient["id"], "patient.read") == []

    client.get(f"{PATIENTS}/{patient['id']}", headers=doctor)
    client.get(f"{PATIENTS}/{patient['id']}", headers=admin)

    reads = audit_entries(db, patient["id"], "patient.read")
    assert [(r.actor_subject, r.actor_role) for r in reads] == [
        ("doctor-main", "doctor"),
        ("admin-main", "admin"),
    ]
    assert all(r.entity_type == "patient" for r in reads)
    assert all(r.request_id for r in reads)


def test_listing_patients_audits_every_patient_returned(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patients = [create_patient(client, doctor) for _ in range(3)]

    listed = client.get(PATIENTS, headers=doctor).json()["items"]
    by_email = search(client, doctor, patients[1]["email"])

    assert {p["id"] for p in listed} == {p["id"] for p in patients}
    assert len(by_email.json()["items"]) == 1
    for patient in patients:
        reads = audit_entries(db, patient["id"], "patient.read")
        expected = 2 if patient is patients[1] else 1
        assert len(reads) == expected, patient
        assert all(r.actor_subject == "doctor-main" for r in reads)


def test_patient_created_audit_row_never_holds_plaintext_phi(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(
        client, doctor, name="Zelda Q. Patient", phone="+1 212 555 0147", date_of_birth="1975-12-31"
    )

    (created,) = audit_entries(db, patient["id"], "patient.created")

    as_json = json.dumps([created.before, created.after]).lower()
    for value in phi_values(patient):
        assert value.lower() not in as_json
    assert created.after is not None
    assert {f: created.after[f] for f in PHI_FIELDS} == dict.fromkeys(PHI_FIELDS, "[redacted]")
    assert created.actor_subject == "doctor-main"


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("invalid e-mail", {"email": "not-an-email"}),
        ("e-mail without domain", {"email": "jane@"}),
        (
            "future date of birth",
            {"date_of_birth": (date.today() + timedelta(days=30)).isoformat()},
        ),
        ("date of birth today", {"date_of_birth": date.today().isoformat()}),
        ("date of birth before 1900", {"date_of_birth": "1899-12-31"}),
        ("unknown field", {"ssn": "078-05-1120"}),
        ("empty name", {"name": ""}),
        ("phone with letters", {"phone": "call me maybe"}),
        ("doctor_id not a uuid", {"doctor_id": "dr-who"}),
    ],
)
def test_bad_patient_input_is_422_and_writes_no_row(
    client: TestClient, db: Session, doctor: Headers, case: str, overrides: Json
) -> None:
    user_id(client, doctor)  # provisioned (and audited) before counting
    before = patient_and_audit_counts(db)

    response = client.post(PATIENTS, json=patient_body(**overrides), headers=doctor)

    assert_problem(response, 422, "/problems/validation-error")
    assert patient_and_audit_counts(db) == before, case


@pytest.mark.parametrize("missing", ["name", "email", "phone", "date_of_birth"])
def test_patient_missing_a_required_field_is_422_and_writes_no_row(
    client: TestClient, db: Session, doctor: Headers, missing: str
) -> None:
    user_id(client, doctor)
    body = patient_body()
    del body[missing]
    before = patient_and_audit_counts(db)

    response = client.post(PATIENTS, json=body, headers=doctor)

    problem = assert_problem(response, 422, "/problems/validation-error")
    assert any(error["field"] == missing for error in problem["errors"])
    assert patient_and_audit_counts(db) == before


def test_unknown_patient_id_is_404(client: TestClient, doctor: Headers) -> None:
    response = client.get(f"{PATIENTS}/{uuid.uuid4()}", headers=doctor)

    assert_problem(response, 404, "/problems/not-found")
