"""The whole path over the real reference pharmacy (FHIR R4 over HTTP, API key): a paid
prescription order is sent as MedicationRequests, accepted, retried through 5xx, refused with
the pharmacy's OperationOutcome, dispensed (MedicationDispense), cancelled at the pharmacy before
the refund, and 409 once dispensed. No secret and no PHI beyond the allow-list leaves or stays."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.models import OutboxMessage, Payment, PharmacyLog
from app.models.base import utcnow
from app.pharmacy import flows
from tests.fixtures.patients import Headers, Json
from tests.fixtures.pharmacy import ReferencePharmacy
from tests.fixtures.pharmacy_orders import (
    API_KEY,
    SUBMISSIONS,
    create_pharmacy,
    paid_prescription_order,
    prescription_product,
    submissions_of,
)
from tests.fixtures.problems import assert_problem


def _fhir_pharmacy(client: TestClient, admin: Headers, server: ReferencePharmacy) -> Json:
    return create_pharmacy(client, admin, "fhir_r4", server.base_url)


def test_a_paid_order_reaches_the_reference_pharmacy_and_comes_back_dispensed(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    reference_pharmacy: ReferencePharmacy,
) -> None:
    _fhir_pharmacy(client, admin, reference_pharmacy)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))

    report = flows.drain(sessions)
    assert report.delivery.delivered == 1, report.delivery.errors
    (accepted,) = submissions_of(db, order["id"])
    assert accepted.status in ("submitted", "accepted") and accepted.external_id
    assert reference_pharmacy.stats()["distinct_requests"] == 1

    # What was sent: MedicationRequests with the allow-listed patient details only.
    (submit_log,) = db.scalars(
        select(PharmacyLog).where(
            PharmacyLog.submission_id == accepted.id, PharmacyLog.operation == "submit"
        )
    )
    logs = client.get(f"{SUBMISSIONS}/{accepted.id}/logs", headers=admin).json()
    bundle = json.loads(logs[0]["request_body"])
    assert bundle["resourceType"] == "Bundle"
    sent = json.dumps(bundle)
    patient = order["patient"]
    assert "MedicationRequest" in sent and "Take 1 capsule" in sent
    assert patient["id"] not in sent and patient["email"] not in sent
    assert API_KEY not in json.dumps(logs) and API_KEY not in str(submit_log.request_headers)

    reference_pharmacy.settings(dispense_delay_seconds=0)
    polls = flows.poll_statuses(sessions, now=utcnow() + timedelta(hours=1))
    assert polls.changed == 1, polls.errors
    (dispensed,) = submissions_of(db, order["id"])
    assert dispensed.status == "dispensed"
    assert dispensed.dispense is not None and dispensed.dispense["count"] >= 1
    assert patient["name"] not in json.dumps(dispensed.dispense)
    view = client.get(f"/api/v1/orders/{order['id']}", headers=admin).json()
    assert view["pharmacy"][0]["status"] == "dispensed"

    # Dispensed: the order cannot be cancelled, and no refund is queued.
    refused = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert_problem(refused, 409, "/problems/already-dispensed")
    assert _refund_queued(db, order["id"]) is False


def test_5xx_answers_are_retried_until_the_pharmacy_accepts(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    reference_pharmacy: ReferencePharmacy,
) -> None:
    _fhir_pharmacy(client, admin, reference_pharmacy)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    reference_pharmacy.faults(error_rate=1.0)
    first = flows.deliver_due(sessions)
    assert first.retried == 1
    (waiting,) = submissions_of(db, order["id"])
    assert waiting.status == "pending" and waiting.attempts == 1

    reference_pharmacy.faults(error_rate=0)
    later = utcnow() + timedelta(seconds=get_settings().pharmacy_backoff_base_seconds + 1)
    assert flows.deliver_due(sessions, now=later).delivered == 1
    (done,) = submissions_of(db, order["id"])
    assert done.status in ("submitted", "accepted") and done.attempts == 2
    assert reference_pharmacy.stats()["distinct_requests"] == 1


def test_a_refusal_dead_letters_at_once_with_the_pharmacys_message(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    reference_pharmacy: ReferencePharmacy,
) -> None:
    _fhir_pharmacy(client, admin, reference_pharmacy)
    reference_pharmacy.settings(max_quantity=1)  # our orders ask for 2
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    assert flows.deliver_due(sessions).dead_lettered == 1
    (dead,) = submissions_of(db, order["id"])
    assert (dead.status, dead.attempts) == ("dead_letter", 1)
    assert dead.last_error and "quantity" in dead.last_error
    assert reference_pharmacy.stats()["distinct_requests"] == 0


def test_cancelling_tells_the_pharmacy_before_the_refund(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    reference_pharmacy: ReferencePharmacy,
) -> None:
    _fhir_pharmacy(client, admin, reference_pharmacy)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    flows.drain(sessions)

    # The pharmacy is down: 503, nothing changed, no refund.
    reference_pharmacy.faults(error_rate=1.0)
    down = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert_problem(down, 503, "/problems/pharmacy-unavailable")
    assert _refund_queued(db, order["id"]) is False
    assert submissions_of(db, order["id"])[0].status in ("submitted", "accepted")
    # ... except the record of the failed exchange, kept although the request was refused.
    failed_cancels = db.scalars(
        select(PharmacyLog).where(
            PharmacyLog.submission_id == submissions_of(db, order["id"])[0].id,
            PharmacyLog.operation == "cancel",
        )
    ).all()
    assert [log.outcome for log in failed_cancels] == ["transient_error"]
    assert failed_cancels[0].status_code >= 500  # the injected fault

    reference_pharmacy.faults(error_rate=0)
    ok = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "cancelled"
    (cancelled,) = submissions_of(db, order["id"])
    assert cancelled.status == "cancelled"
    assert _refund_queued(db, order["id"]) is True
    # The pharmacy holds it cancelled: it is never dispensed.
    reference_pharmacy.settings(dispense_delay_seconds=0)
    assert reference_pharmacy.stats()["dispensed"] == 0


def test_no_secret_is_stored_anywhere_after_a_delivery(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    reference_pharmacy: ReferencePharmacy,
) -> None:
    pharmacy = _fhir_pharmacy(client, admin, reference_pharmacy)
    paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    flows.drain(sessions)
    tested = client.post(f"/api/v1/pharmacies/{pharmacy['id']}/test-connection", headers=admin)
    assert tested.json()["ok"] is True
    for table in ("pharmacies", "pharmacy_logs", "pharmacy_submissions", "audit_log"):
        rows = db.execute(text(f"SELECT t::text FROM {table} t")).scalars().all()
        assert not any(API_KEY in row for row in rows), table


def _refund_queued(db: Session, order_id: str) -> bool:
    payment_id = db.scalar(select(Payment.id).where(Payment.order_id == uuid.UUID(order_id)))
    key = f"refund-{payment_id}"
    return db.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)) is not None
