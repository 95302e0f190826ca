"""Editing a patient: the patient's own doctor only, re-encrypted and re-hashed, audited with
the changed fields named and their values redacted; a refused or bad edit changes nothing."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Patient
from tests.fixtures.identity import Auth
from tests.fixtures.patients import (
    PATIENTS,
    Headers,
    audit_entries,
    create_patient,
    patient_and_audit_counts,
)
from tests.fixtures.problems import assert_problem


def stored(db: Session, patient_id: str) -> tuple[str, str, str, str, str]:
    db.expire_all()
    row = db.get(Patient, uuid.UUID(patient_id))
    assert row is not None
    return (
        row.name_encrypted,
        row.email_encrypted,
        row.phone_encrypted,
        row.date_of_birth_encrypted,
        row.email_hash,
    )


def test_the_patients_doctor_corrects_details_and_the_audit_row_names_the_fields_only(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(client, doctor)
    before = stored(db, patient["id"])

    response = client.patch(
        f"{PATIENTS}/{patient['id']}",
        json={"name": "Janet Roe", "email": "Janet.Roe@Example.org", "date_of_birth": "1979-12-31"},
        headers=doctor,
    )

    assert response.status_code == 200, response.text
    edited = response.json()
    assert (edited["name"], edited["email"], edited["date_of_birth"]) == (
        "Janet Roe",
        "janet.roe@example.org",
        "1979-12-31",
    )
    assert edited["phone"] == patient["phone"]  # left out: unchanged
    assert client.get(f"{PATIENTS}/{patient['id']}", headers=doctor).json() == edited
    after = stored(db, patient["id"])
    assert after[2] == before[2]  # the phone's ciphertext untouched
    assert all(a != b for a, b in zip(after[:2] + after[3:], before[:2] + before[3:], strict=True))
    found = client.post(
        f"{PATIENTS}/search", json={"email": "janet.roe@example.org"}, headers=doctor
    ).json()
    assert [p["id"] for p in found["items"]] == [patient["id"]]  # the look-up hash follows
    (entry,) = audit_entries(db, patient["id"], "patient.updated")
    assert entry.after == {
        "name": "[redacted]",
        "email": "[redacted]",
        "date_of_birth": "[redacted]",
    }
    assert entry.before == entry.after
    text = json.dumps([entry.before, entry.after])
    assert "Janet" not in text and "example.org" not in text and "1979" not in text


def test_an_edit_that_changes_nothing_writes_no_update_and_is_audited_as_a_read(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(client, doctor)
    before = stored(db, patient["id"])

    response = client.patch(
        f"{PATIENTS}/{patient['id']}",
        json={"name": patient["name"], "email": patient["email"].upper(), "phone": None},
        headers=doctor,
    )

    assert response.status_code == 200, response.text
    assert response.json() == patient
    assert stored(db, patient["id"]) == before
    assert audit_entries(db, patient["id"], "patient.updated") == []
    assert len(audit_entries(db, patient["id"], "patient.read")) == 1


def test_another_doctor_gets_404_and_an_admin_403_and_nothing_changes(
    client: TestClient, db: Session, doctor: Headers, admin: Headers, auth: Auth
) -> None:
    patient = create_patient(client, doctor)
    before = stored(db, patient["id"])
    counts = patient_and_audit_counts(db)
    url = f"{PATIENTS}/{patient['id']}"

    other = client.patch(url, json={"name": "Mallory"}, headers=auth("doctor"))
    as_admin = client.patch(url, json={"name": "Mallory"}, headers=admin)
    missing = client.patch(f"{PATIENTS}/{uuid.uuid4()}", json={"name": "X"}, headers=doctor)

    # Another doctor's patient answers exactly like a missing one.
    assert assert_problem(other, 404)["detail"] == f"patient {patient['id']} does not exist"
    assert_problem(missing, 404)
    assert assert_problem(as_admin, 403)["type"].endswith("/forbidden")
    assert stored(db, patient["id"]) == before
    assert patient_and_audit_counts(db) == counts


def test_an_email_another_of_the_doctors_patients_holds_is_409_and_nothing_changes(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    first = create_patient(client, doctor)
    second = create_patient(client, doctor)
    before = stored(db, second["id"])

    response = client.patch(
        f"{PATIENTS}/{second['id']}", json={"email": first["email"].upper()}, headers=doctor
    )

    body = assert_problem(response, 409)
    assert body["type"].endswith("/duplicate")
    assert stored(db, second["id"]) == before
    assert audit_entries(db, second["id"], "patient.updated") == []


def test_bad_edits_are_422_and_change_nothing(
    client: TestClient, db: Session, doctor: Headers
) -> None:
    patient = create_patient(client, doctor)
    before = stored(db, patient["id"])
    url = f"{PATIENTS}/{patient['id']}"

    for body in (
        {"email": "not-an-email"},
        {"phone": "call me"},
        {"date_of_birth": "2999-01-01"},
        {"date_of_birth": 0},  # not seconds since 1970
        {"name": ""},
        {"doctor_id": str(uuid.uuid4())},  # the owner is not editable
        {"nickname": "J"},
    ):
        assert_problem(client.patch(url, json=body, headers=doctor), 422)

    assert stored(db, patient["id"]) == before
    assert audit_entries(db, patient["id"], "patient.updated") == []
