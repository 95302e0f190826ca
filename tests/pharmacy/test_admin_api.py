"""The admin API of pharmacies and submissions: secrets are write-only and never appear in an
answer, a stored header, a log row or the audit log; bad input is a problem with nothing
written; doctors are refused; every read of the exchange logs is audited."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.models import AuditEntry, Pharmacy, PharmacyLog
from app.pharmacy import flows
from tests.fixtures.patients import Headers
from tests.fixtures.pharmacy_double import NAME, PharmacyState
from tests.fixtures.pharmacy_orders import (
    API_KEY,
    PHARMACIES,
    SUBMISSIONS,
    create_pharmacy,
    paid_prescription_order,
    prescription_product,
    submissions_of,
)
from tests.fixtures.problems import assert_problem

BASE_URL = "http://127.0.0.1:9/fhir"
CLIENT_SECRET = "cs_live_0a1b2c3d4e5f60718293"


def _pharmacy_count(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(Pharmacy)) or 0)


def _everything_stored(db: Session) -> str:
    """Every row of the tables a secret could leak into, as text."""
    dumps = []
    for table in ("pharmacies", "pharmacy_logs", "pharmacy_submissions", "audit_log", "alerts"):
        rows = db.execute(text(f"SELECT t::text FROM {table} t")).scalars().all()
        dumps.extend(rows)
    return "\n".join(dumps)


def test_secrets_are_write_only_and_encrypted_at_rest(
    client: TestClient, db: Session, admin: Headers, pharmacy_double: PharmacyState
) -> None:
    created = create_pharmacy(client, admin, NAME, BASE_URL)
    assert created["api_key_set"] is True and "api_key" not in created
    assert API_KEY not in json.dumps(created)
    oauth = create_pharmacy(
        client,
        admin,
        NAME,
        BASE_URL,
        is_default=False,
        auth_kind="oauth2",
        api_key=None,
        token_url="http://127.0.0.1:9/token",
        client_id="portal",
        client_secret=CLIENT_SECRET,
    )
    assert oauth["client_secret_set"] is True and oauth["api_key_set"] is False
    for answer in (
        client.get(PHARMACIES, headers=admin).text,
        client.get(f"{PHARMACIES}/{created['id']}", headers=admin).text,
        client.get(f"{PHARMACIES}/{oauth['id']}", headers=admin).text,
    ):
        assert API_KEY not in answer and CLIENT_SECRET not in answer
    row = db.get(Pharmacy, uuid.UUID(created["id"]))
    assert row is not None and row.api_key_encrypted is not None
    assert row.api_key_encrypted.startswith("enc1:")
    stored = _everything_stored(db)
    assert API_KEY not in stored and CLIENT_SECRET not in stored

    # A new key replaces the old one; the audit says it changed, never what it is.
    response = client.patch(
        f"{PHARMACIES}/{created['id']}", json={"api_key": "pk_rotated_12345"}, headers=admin
    )
    assert response.status_code == 200, response.text
    (entry,) = db.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "pharmacy.updated", AuditEntry.entity_id == created["id"]
        )
    )
    assert entry.after is not None and entry.after["api_key_changed"] is True
    assert "pk_rotated_12345" not in _everything_stored(db)


def test_no_secret_in_logs_stored_headers_or_urls_and_log_reads_are_audited(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    flows.drain(sessions)
    (submission,) = submissions_of(db, order["id"])

    # The double put the key in a header and the URL: both stored without it.
    logs = list(db.scalars(select(PharmacyLog).where(PharmacyLog.submission_id == submission.id)))
    assert logs
    for log in logs:
        assert log.request_headers["X-Api-Key"] == "[redacted]"
        assert API_KEY not in log.url
        assert log.request_body_encrypted is not None
        assert log.request_body_encrypted.startswith("enc1:")  # PHI: encrypted at rest
    assert API_KEY not in _everything_stored(db)

    response = client.get(f"{SUBMISSIONS}/{submission.id}/logs", headers=admin)
    assert response.status_code == 200, response.text
    read = response.json()
    assert API_KEY not in response.text
    assert read[0]["operation"] == "submit"
    assert json.loads(read[0]["request_body"])["id"] == str(submission.id)  # decrypted
    (audited,) = db.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "pharmacy_log.read",
            AuditEntry.entity_id == str(submission.id),
        )
    )
    assert audited.after is not None and len(audited.after["log_ids"]) == len(read)
    # A second read is a second audit row.
    client.get(f"{SUBMISSIONS}/{submission.id}/logs", headers=admin)
    assert (
        db.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "pharmacy_log.read")
        )
        == 2
    )

    detail = client.get(f"{SUBMISSIONS}/{submission.id}", headers=admin).json()
    assert "request_body" not in json.dumps(detail)  # bodies only through /logs


# Fixed ids (any id is refused before it is looked up): every pytest-xdist worker must collect
# the same test ids.
SOME_ID = "00000000-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", PHARMACIES),
        ("POST", PHARMACIES),
        ("GET", f"{PHARMACIES}/{SOME_ID}"),
        ("PATCH", f"{PHARMACIES}/{SOME_ID}"),
        ("DELETE", f"{PHARMACIES}/{SOME_ID}"),
        ("POST", f"{PHARMACIES}/{SOME_ID}/test-connection"),
        ("GET", SUBMISSIONS),
        ("GET", f"{SUBMISSIONS}/{SOME_ID}"),
        ("POST", f"{SUBMISSIONS}/{SOME_ID}/resend"),
        ("GET", f"{SUBMISSIONS}/{SOME_ID}/logs"),
    ],
)
def test_doctors_are_refused(client: TestClient, doctor: Headers, method: str, path: str) -> None:
    response = client.request(method, path, headers=doctor, json={} if method != "GET" else None)
    assert_problem(response, 403)


BAD_BODIES: list[tuple[dict[str, Any], int, str]] = [
    ({"base_url": "ftp://pharmacy.example"}, 422, "base_url"),
    ({"base_url": "https://user:pw@pharmacy.example"}, 422, "base_url"),
    ({"base_url": "https://pharmacy.example/?token=x"}, 422, "base_url"),
    ({"connector": "Not A Name"}, 422, "connector"),
    ({"connector": "no_such_connector"}, 409, "unknown-connector"),
    ({"auth_kind": "oauth2"}, 409, "incomplete-pharmacy-auth"),
    ({"auth_kind": "mtls"}, 409, "incomplete-pharmacy-auth"),
    ({"auth_kind": "password"}, 422, "auth_kind"),
    ({"timeout_seconds": 0}, 422, "timeout_seconds"),
    ({"timeout_seconds": 1000}, 422, "timeout_seconds"),
    ({"api_key": "has spaces in it"}, 422, "api_key"),
    ({"cert_file": "relative/path.pem"}, 422, "cert_file"),
    ({"mapping": {"a": "x" * 20000}}, 422, "mapping"),
    ({"mapping": {"a": "nul\u0000"}}, 422, "mapping"),
    ({"name": ""}, 422, "name"),
    ({"surprise": 1}, 422, "surprise"),
    ({"is_default": True, "active": False}, 409, "conflict"),
]


@pytest.mark.parametrize(("change", "status", "marker"), BAD_BODIES)
def test_bad_pharmacy_input_is_a_problem_and_writes_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    pharmacy_double: PharmacyState,
    change: dict[str, Any],
    status: int,
    marker: str,
) -> None:
    before = _pharmacy_count(db)
    body: dict[str, Any] = {
        "name": f"Bad {uuid.uuid4().hex[:6]}",
        "connector": NAME,
        "base_url": BASE_URL,
        **change,
    }
    response = client.post(PHARMACIES, json=body, headers=admin)
    problem = assert_problem(response, status)
    assert marker in json.dumps(problem)
    assert _pharmacy_count(db) == before


def test_pharmacy_crud_default_swap_and_delete_rules(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    pharmacy_double: PharmacyState,
) -> None:
    first = create_pharmacy(client, admin, NAME, BASE_URL)
    second = create_pharmacy(client, admin, NAME, BASE_URL, is_default=True)
    # One default at most: the second took it over.
    assert client.get(f"{PHARMACIES}/{first['id']}", headers=admin).json()["is_default"] is False
    assert db.scalar(select(func.count()).select_from(Pharmacy).where(Pharmacy.is_default)) == 1
    # The same name twice: 409.
    duplicate = client.post(
        PHARMACIES,
        json={"name": first["name"], "connector": NAME, "base_url": BASE_URL},
        headers=admin,
    )
    assert_problem(duplicate, 409, "/problems/duplicate")
    # Null for a required field: 422; unknown id: 404.
    assert_problem(
        client.patch(f"{PHARMACIES}/{first['id']}", json={"name": None}, headers=admin), 422
    )
    assert_problem(
        client.patch(f"{PHARMACIES}/{uuid.uuid4()}", json={"active": False}, headers=admin), 404
    )
    # Switching to no authentication drops the stored key.
    plain = client.patch(f"{PHARMACIES}/{first['id']}", json={"auth_kind": "none"}, headers=admin)
    assert plain.status_code == 200 and plain.json()["api_key_set"] is False

    # A pharmacy that received something is kept: 409, deactivate instead.
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    assert submissions_of(db, order["id"])[0].pharmacy_id == uuid.UUID(second["id"])
    assert_problem(
        client.delete(f"{PHARMACIES}/{second['id']}", headers=admin),
        409,
        "/problems/pharmacy-in-use",
    )
    # One that received nothing is deleted; products naming it fall back to the default.
    product = prescription_product(client, admin, pharmacy_id=first["id"])
    assert client.delete(f"{PHARMACIES}/{first['id']}", headers=admin).status_code == 204
    assert (
        client.get(f"/api/v1/products/{product['id']}", headers=admin).json()["pharmacy_id"] is None
    )


def test_test_connection_runs_the_healthcheck_and_logs_it(
    client: TestClient, db: Session, admin: Headers, pharmacy_double: PharmacyState
) -> None:
    pharmacy = create_pharmacy(client, admin, NAME, BASE_URL)
    up = client.post(f"{PHARMACIES}/{pharmacy['id']}/test-connection", headers=admin)
    assert up.status_code == 200 and up.json()["ok"] is True
    pharmacy_double.healthy = False
    down = client.post(f"{PHARMACIES}/{pharmacy['id']}/test-connection", headers=admin).json()
    assert down["ok"] is False and "down" in down["message"]
    logged = list(
        db.scalars(
            select(PharmacyLog.outcome)
            .where(PharmacyLog.pharmacy_id == uuid.UUID(pharmacy["id"]))
            .order_by(PharmacyLog.at)
        )
    )
    assert logged == ["ok", "transient_error"]
    assert API_KEY not in _everything_stored(db)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"rxnorm_code": "12a"}, 422),
        ({"rxnorm_code": "0123"}, 422),
        ({"ndc_code": "1234-567-89"}, 422),
        ({"ndc_code": "12345678901234"}, 422),
        ({"pharmacy_id": "not-a-uuid"}, 422),
        ({"pharmacy_id": str(uuid.uuid4())}, 404),
    ],
)
def test_bad_product_codes_are_refused(
    client: TestClient, admin: Headers, change: dict[str, Any], status: int
) -> None:
    body = {"sku": f"RX-{uuid.uuid4().hex[:8]}", "name": "Rx", "price_cents": 100, **change}
    assert_problem(client.post("/api/v1/products", json=body, headers=admin), status)


def test_product_codes_and_pharmacy_are_set_and_cleared_through_the_catalog(
    client: TestClient, admin: Headers, pharmacy_double: PharmacyState
) -> None:
    pharmacy = create_pharmacy(client, admin, NAME, BASE_URL)
    product = prescription_product(client, admin, pharmacy_id=pharmacy["id"])
    assert (product["rxnorm_code"], product["ndc_code"], product["pharmacy_id"]) == (
        "308191",
        "0093-3109-01",
        pharmacy["id"],
    )
    cleared = client.patch(
        f"/api/v1/products/{product['id']}",
        json={"ndc_code": None, "pharmacy_id": None, "name": None},
        headers=admin,
    ).json()
    assert (cleared["rxnorm_code"], cleared["ndc_code"], cleared["pharmacy_id"]) == (
        "308191",
        None,
        None,
    )
    assert cleared["name"] == product["name"]  # null still leaves the other fields alone


def test_a_sig_is_taken_for_prescription_items_only_and_kept_encrypted(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    from tests.fixtures.orders import create_product, receive_lot
    from tests.fixtures.patients import create_patient

    rx = prescription_product(client, admin)
    otc = create_product(client, admin)
    receive_lot(client, admin, otc["id"], 5)
    patient = create_patient(client, doctor)
    refused = client.post(
        "/api/v1/orders",
        json={
            "patient_id": patient["id"],
            "items": [{"product_id": otc["id"], "quantity": 1, "dosage_text": "twice daily"}],
        },
        headers=doctor,
    )
    assert_problem(refused, 409)
    created = client.post(
        "/api/v1/orders",
        json={
            "patient_id": patient["id"],
            "items": [{"product_id": rx["id"], "quantity": 1, "dosage_text": "Take one at night"}],
        },
        headers=doctor,
    )
    assert created.status_code == 201, created.text
    assert created.json()["items"][0]["dosage_text"] == "Take one at night"
    stored = db.execute(text("SELECT dosage_text_encrypted FROM order_items")).scalars().all()
    assert all("Take one" not in (value or "") for value in stored)
    # An edit that sends no sig keeps the one the item had (existing callers keep working).
    edited = client.patch(
        f"/api/v1/orders/{created.json()['id']}",
        json={"items": [{"product_id": rx["id"], "quantity": 3}]},
        headers=doctor,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["items"][0]["dosage_text"] == "Take one at night"
