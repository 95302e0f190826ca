"""A paid prescription order reaches its pharmacy exactly once in effect: queued in the payment's
transaction, delivered with retries (backoff with full jitter), dead-lettered with an alert when
refused or out of attempts, re-sent by an admin, followed to dispensed; a worker that dies
mid-send loses nothing and duplicates nothing."""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.config import get_settings
from app.models import Alert, AuditEntry, Order, OutboxMessage, Payment, PharmacySubmission
from app.models.base import utcnow
from app.models.status import AlertTopic
from app.orders import flows as order_flows
from app.pharmacy import flows, service
from app.pharmacy.service import NO_PHARMACY, backoff, queue_paid_order
from connectors import registry
from tests.fixtures.orders import create_product, receive_lot
from tests.fixtures.patients import Headers
from tests.fixtures.pharmacy_double import NAME, PharmacyState
from tests.fixtures.pharmacy_orders import (
    SUBMISSIONS,
    create_pharmacy,
    logs_of,
    paid_prescription_order,
    prescription_product,
    submissions_of,
)

BASE_URL = "http://127.0.0.1:9/fhir"


def _timeline(db: Session, order_id: str) -> list[str]:
    return list(
        db.scalars(
            select(AuditEntry.action)
            .where(
                AuditEntry.entity_type == "order",
                AuditEntry.entity_id == order_id,
                AuditEntry.action.like("order.pharmacy_%"),
            )
            .order_by(AuditEntry.id)
        )
    )


def _pharmacy_alerts(db: Session) -> list[Alert]:
    return list(
        db.scalars(
            select(Alert)
            .where(Alert.topic == AlertTopic.PHARMACY, Alert.cleared_at.is_(None))
            .execution_options(populate_existing=True)
        )
    )


def test_a_paid_prescription_order_is_queued_delivered_accepted_and_dispensed(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    pharmacy = create_pharmacy(client, admin, NAME, BASE_URL)
    rx = prescription_product(client, admin)
    otc = create_product(client, admin, name="Bandages")
    receive_lot(client, admin, otc["id"], 10)
    order = paid_prescription_order(client, db, doctor, rx, otc)

    # Written with the payment: one submission, for the prescription item only.
    (queued,) = submissions_of(db, order["id"])
    assert (queued.status, queued.attempts, queued.pharmacy_id) == (
        "pending",
        0,
        uuid.UUID(pharmacy["id"]),
    )
    assert len(queued.order_item_ids) == 1

    report = flows.drain(sessions)
    assert (report.delivery.delivered, report.delivery.retried) == (1, 0)
    (sent,) = pharmacy_double.received
    (item,) = sent.items
    assert (item.rxnorm, item.ndc, item.quantity) == ("308191", "0093-3109-01", 2)
    assert item.dosage_text.startswith("Take 1 capsule")
    # The pharmacy-scoped reference: neither the portal's patient id nor the same for another
    # pharmacy; the name split for dispensing.
    patient_id = order["patient"]["id"]
    assert patient_id not in sent.patient.reference
    assert sent.patient.reference == service.patient_reference(
        uuid.UUID(patient_id), uuid.UUID(pharmacy["id"])
    )
    assert sent.patient.reference != service.patient_reference(uuid.UUID(patient_id), uuid.uuid4())
    assert (sent.patient.given_name, sent.patient.family_name) == ("Dana Q.", "Rivera")
    (accepted,) = submissions_of(db, order["id"])
    assert (accepted.status, accepted.attempts) == ("accepted", 1)
    assert accepted.external_id == f"rx-{accepted.id}"

    pharmacy_double.dispense(accepted.external_id)
    polls = flows.poll_statuses(sessions, now=utcnow() + timedelta(hours=1))
    assert (polls.polled, polls.changed) == (1, 1)
    (dispensed,) = submissions_of(db, order["id"])
    assert dispensed.status == "dispensed" and dispensed.dispensed_at is not None
    assert dispensed.dispense is not None and dispensed.dispense["count"] == 1
    kept = dispensed.dispense["dispenses"][0]
    assert kept["quantity"] == 2 and "subject_name" not in kept  # nothing naming a person

    # The order shows it, and its history has each step.
    view = client.get(f"/api/v1/orders/{order['id']}", headers=admin).json()
    assert [(p["pharmacy_name"], p["status"]) for p in view["pharmacy"]] == [
        (pharmacy["name"], "dispensed")
    ]
    assert _timeline(db, order["id"]) == [
        "order.pharmacy_queued",
        "order.pharmacy_accepted",
        "order.pharmacy_dispensed",
    ]
    # Each exchange logged: the submit and the two polls (accepted, then dispensed).
    logs = logs_of(db, accepted.id)
    assert [(log.operation, log.outcome) for log in logs] == [
        ("submit", "ok"),
        ("status", "ok"),
        ("status", "ok"),
    ]


def test_paying_twice_queues_nothing_more(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    row = db.get(Order, uuid.UUID(order["id"]))
    assert row is not None
    assert queue_paid_order(db, Actor.system("test"), row) == []
    assert len(submissions_of(db, order["id"])) == 1


def test_items_are_grouped_by_their_products_pharmacy_or_the_default_one(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    default = create_pharmacy(client, admin, NAME, BASE_URL)
    specialty = create_pharmacy(client, admin, NAME, BASE_URL + "2", is_default=False)
    common = prescription_product(client, admin)
    special = prescription_product(client, admin, pharmacy_id=specialty["id"])
    order = paid_prescription_order(client, db, doctor, common, special)
    by_pharmacy = {str(s.pharmacy_id): s for s in submissions_of(db, order["id"])}
    assert set(by_pharmacy) == {default["id"], specialty["id"]}
    flows.drain(sessions)
    assert len(pharmacy_double.received) == 2
    assert {c.base_url for c in pharmacy_double.configs} == {BASE_URL, BASE_URL + "2"}


def test_a_transient_failure_is_retried_with_backoff_then_succeeds(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    pharmacy_double.fail_next = ["transient"]

    first = flows.deliver_due(sessions)
    assert (first.retried, first.delivered) == (1, 0)
    (waiting,) = submissions_of(db, order["id"])
    assert waiting.status == "pending" and waiting.attempts == 1
    assert waiting.last_error is not None and "503" in waiting.last_error
    ceiling = get_settings().pharmacy_backoff_base_seconds
    assert waiting.next_attempt_at <= utcnow() + timedelta(seconds=ceiling + 1)
    # Not due before its time: a run now sends nothing.
    assert flows.deliver_due(sessions, now=utcnow() - timedelta(seconds=1)).claimed == 0

    second = flows.deliver_due(sessions, now=utcnow() + timedelta(seconds=ceiling + 1))
    assert second.delivered == 1
    (done,) = submissions_of(db, order["id"])
    assert (done.status, done.attempts, done.last_error) == ("accepted", 2, None)
    assert [(log.attempt, log.outcome) for log in logs_of(db, done.id)] == [
        (1, "transient_error"),
        (2, "ok"),
    ]


def test_the_backoff_is_exponential_capped_and_fully_jittered() -> None:
    settings = get_settings()
    rng = random.Random(7)
    for attempts in range(1, 30):
        ceiling = min(
            settings.pharmacy_backoff_max_seconds,
            settings.pharmacy_backoff_base_seconds * 2 ** (attempts - 1),
        )
        delays = [backoff(attempts, rng).total_seconds() for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8  # the full range


def test_a_permanent_refusal_dead_letters_at_once_with_the_pharmacys_message_and_alerts(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    pharmacy_double.fail_next = ["permanent:MedicationRequest.dosageInstruction[0].text: required"]

    report = flows.deliver_due(sessions)
    assert report.dead_lettered == 1
    (dead,) = submissions_of(db, order["id"])
    assert (dead.status, dead.attempts) == ("dead_letter", 1)
    assert dead.last_error == "MedicationRequest.dosageInstruction[0].text: required"
    (alert,) = [a for a in _pharmacy_alerts(db) if str(dead.id) in a.key]
    assert "Dana" not in alert.summary and "dosage" not in alert.summary  # no PHI, no message
    assert _timeline(db, order["id"])[-1] == "order.pharmacy_dead_lettered"


def test_out_of_attempts_dead_letters_alerts_and_an_admin_resends_it(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    pharmacy_double.fail_always = "transient"
    max_attempts = get_settings().pharmacy_max_attempts
    later = utcnow()
    for _ in range(max_attempts):
        later += timedelta(seconds=get_settings().pharmacy_backoff_max_seconds + 1)
        flows.deliver_due(sessions, now=later)
    (dead,) = submissions_of(db, order["id"])
    assert (dead.status, dead.attempts) == ("dead_letter", max_attempts)
    assert dead.last_error is not None and dead.last_error.startswith(
        f"gave up after {max_attempts} attempts"
    )
    assert pharmacy_double.submit_calls == max_attempts
    assert any(str(dead.id) in a.key for a in _pharmacy_alerts(db))

    listed = client.get(SUBMISSIONS, params={"status": "dead_letter"}, headers=admin).json()
    assert str(dead.id) in [s["id"] for s in listed["items"]]
    detail = client.get(f"{SUBMISSIONS}/{dead.id}", headers=admin).json()
    assert len(detail["exchanges"]) == max_attempts
    assert {e["outcome"] for e in detail["exchanges"]} == {"transient_error"}

    pharmacy_double.fail_always = None
    resent = client.post(f"{SUBMISSIONS}/{dead.id}/resend", headers=admin)
    assert resent.status_code == 200, resent.text
    assert (resent.json()["status"], resent.json()["attempts"]) == ("pending", 0)
    # A second resend of what is no longer a dead letter: 409, nothing changed.
    again = client.post(f"{SUBMISSIONS}/{dead.id}/resend", headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    assert flows.drain(sessions).delivery.delivered == 1
    (done,) = submissions_of(db, order["id"])
    assert done.status == "accepted"
    assert not any(str(done.id) in a.key for a in _pharmacy_alerts(db))  # cleared
    assert db.scalar(
        select(AuditEntry.id).where(
            AuditEntry.action == "pharmacy_submission.resent", AuditEntry.entity_id == str(done.id)
        )
    )


def test_without_a_pharmacy_the_items_are_held_with_an_alert_until_one_is_configured(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    (held,) = submissions_of(db, order["id"])
    assert (held.status, held.pharmacy_id, held.last_error) == ("dead_letter", None, NO_PHARMACY)
    # Nothing is due, yet the sensor has a reason to run: a dead letter nobody was told of.
    assert service.due_count(db, now=utcnow()) == 0
    assert service.unalerted_dead_letters(db) == 1
    flows.deliver_due(sessions)
    assert any(str(held.id) in a.key for a in _pharmacy_alerts(db))
    assert service.unalerted_dead_letters(db) == 0
    view = client.get(f"/api/v1/orders/{order['id']}", headers=admin).json()
    assert view["pharmacy"][0]["status"] == "dead_letter"

    # Re-sent before a pharmacy exists: refused, still held.
    assert client.post(f"{SUBMISSIONS}/{held.id}/resend", headers=admin).status_code == 409
    pharmacy = create_pharmacy(client, admin, NAME, BASE_URL)
    assert client.post(f"{SUBMISSIONS}/{held.id}/resend", headers=admin).status_code == 200
    flows.drain(sessions)
    (done,) = submissions_of(db, order["id"])
    assert (done.status, str(done.pharmacy_id)) == ("accepted", pharmacy["id"])


def test_a_worker_killed_mid_send_loses_nothing_and_duplicates_nothing(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    # A worker claims the submission and sends it, then dies before recording the answer.
    with sessions.begin() as session:
        (dying,) = service.claim_due(session, now=utcnow(), limit=10)
    assert dying.submission is not None and dying.config is not None
    dying_connector = registry.get_connector(dying.config, lambda exchange: None)
    dying_connector.submit(dying.submission)
    (claimed,) = submissions_of(db, order["id"])
    assert claimed.status == "sending" and claimed.claimed_until is not None
    # While its lease runs, nobody else takes it.
    assert flows.deliver_due(sessions).claimed == 0
    # After the lease, it is sent again; the pharmacy de-duplicates by item identifier.
    after_lease = claimed.claimed_until + timedelta(seconds=1)
    assert flows.deliver_due(sessions, now=after_lease).delivered == 1
    assert pharmacy_double.submit_calls == 2
    assert len(pharmacy_double.prescriptions) == 1
    # The dead worker's late answer changes nothing: its claim is gone.
    with sessions.begin() as session:
        status = service.record_delivery(
            session, Actor.system("late"), dying, service.Sent(error="late", permanent=True)
        )
    assert status == "accepted"
    (done,) = submissions_of(db, order["id"])
    assert (done.status, done.attempts) == ("accepted", 2)


def test_an_inactive_pharmacy_dead_letters_its_submissions_with_the_reason(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    pharmacy = create_pharmacy(client, admin, NAME, BASE_URL, is_default=False)
    product = prescription_product(client, admin, pharmacy_id=pharmacy["id"])
    order = paid_prescription_order(client, db, doctor, product)
    response = client.patch(
        f"/api/v1/pharmacies/{pharmacy['id']}", json={"active": False}, headers=admin
    )
    assert response.status_code == 200, response.text
    flows.deliver_due(sessions)
    (dead,) = submissions_of(db, order["id"])
    assert dead.status == "dead_letter" and "inactive" in (dead.last_error or "")
    assert pharmacy_double.submit_calls == 0


def test_cancelling_a_submitted_order_tells_the_pharmacy_before_the_refund(
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
    refund_key = _refund_key(db, order["id"])

    # The pharmacy cannot be reached: 503, and nothing changed (no refund, order still paid).
    pharmacy_double.cancel_error = "transient"
    down = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert down.status_code == 503, down.text
    assert down.json()["type"] == "/problems/pharmacy-unavailable"
    assert _order_status(db, order["id"]) == "paid"
    assert not _outbox_has(db, refund_key)
    (held,) = submissions_of(db, order["id"])
    assert held.status == "accepted"

    # Reachable: cancelled at the pharmacy first, then here, then the refund queued.
    pharmacy_double.cancel_error = None
    ok = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert ok.status_code == 200, ok.text
    assert ok.json()["pharmacy"][0]["status"] == "cancelled"
    assert pharmacy_double.statuses[held.external_id or ""] == "cancelled"
    assert _order_status(db, order["id"]) == "cancelled"
    assert _outbox_has(db, refund_key)
    assert _timeline(db, order["id"])[-1] == "order.pharmacy_cancelled"


def test_a_dispensed_order_cannot_be_cancelled(
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
    (accepted,) = submissions_of(db, order["id"])
    pharmacy_double.dispense(accepted.external_id or "")

    # Dispensed at the pharmacy, not yet polled: the pharmacy says so (409), nothing changes.
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert response.status_code == 409, response.text
    assert response.json()["type"] == "/problems/already-dispensed"
    assert _order_status(db, order["id"]) == "paid"

    # Polled: refused before asking the pharmacy again.
    flows.poll_statuses(sessions, now=utcnow() + timedelta(hours=1))
    calls = pharmacy_double.cancel_calls
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin)
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/already-dispensed"
    assert pharmacy_double.cancel_calls == calls
    assert not _outbox_has(db, _refund_key(db, order["id"]))


def test_an_order_cancelled_before_delivery_is_never_sent(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=admin).status_code == 200
    flows.drain(sessions)
    (cancelled,) = submissions_of(db, order["id"])
    assert cancelled.status == "cancelled"
    assert pharmacy_double.submit_calls == 0 and pharmacy_double.cancel_calls == 0


def test_a_refund_made_at_stripe_queues_the_pharmacys_cancel_for_the_next_poll(
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
    row = db.get(Order, uuid.UUID(order["id"]))
    assert row is not None
    order_flows.cancel_refunded_at_stripe(db, Actor.system("stripe-webhook"), row)
    db.commit()
    (queued,) = submissions_of(db, order["id"])
    assert queued.status == "accepted" and queued.cancel_requested_at is not None
    polls = flows.poll_statuses(sessions)
    assert polls.cancels_sent == 1
    (done,) = submissions_of(db, order["id"])
    assert (done.status, done.cancel_requested_at) == ("cancelled", None)


def _order_status(db: Session, order_id: str) -> str:
    return str(
        db.scalar(
            select(Order.status)
            .where(Order.id == uuid.UUID(order_id))
            .execution_options(populate_existing=True)
        )
    )


def _refund_key(db: Session, order_id: str) -> str:
    payment_id = db.scalar(select(Payment.id).where(Payment.order_id == uuid.UUID(order_id)))
    return f"refund-{payment_id}"


def _outbox_has(db: Session, key: str) -> bool:
    return db.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)) is not None


def test_submissions_are_not_deleted_by_the_application(db: Session) -> None:
    """The application role may not delete submissions (their history stays)."""
    with pytest.raises(ProgrammingError), db.begin_nested():
        db.execute(text("DELETE FROM pharmacy_submissions"))
    assert PharmacySubmission.__tablename__ == "pharmacy_submissions"


def test_a_submission_that_cannot_be_built_is_dead_lettered_and_does_not_block_others(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    broken = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    fine = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    # The patient's name sealed for another field: it no longer decrypts.
    db.execute(
        text("UPDATE patients SET name_encrypted = email_encrypted WHERE id = :id"),
        {"id": broken["patient"]["id"]},
    )
    db.commit()
    report = flows.deliver_due(sessions)
    assert (report.claimed, report.delivered, report.dead_lettered) == (2, 1, 1)
    (dead,) = submissions_of(db, broken["id"])
    assert dead.status == "dead_letter"
    assert dead.last_error == ("the submission could not be built (PhiKeyError); fix, then re-send")
    assert submissions_of(db, fine["id"])[0].status == "accepted"


def test_key_rotation_reseals_pharmacy_secrets_exchange_bodies_and_sigs(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    from app.models import OrderItem, Pharmacy, PharmacyLog
    from tests.fixtures.patients import second_phi_key

    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    flows.drain(sessions)
    with second_phi_key():
        changed = service.rotate_pharmacy_keys(db, batch=1)
        assert changed >= 3  # the pharmacy, its logs, the order item
        assert service.rotate_pharmacy_keys(db) == 0  # nothing left on the old key
        db.flush()
        sealed = [
            *db.scalars(
                select(Pharmacy.api_key_encrypted).where(Pharmacy.api_key_encrypted.is_not(None))
            ),
            *db.scalars(
                select(PharmacyLog.request_body_encrypted).where(
                    PharmacyLog.request_body_encrypted.is_not(None)
                )
            ),
            *db.scalars(
                select(OrderItem.dosage_text_encrypted).where(
                    OrderItem.dosage_text_encrypted.is_not(None)
                )
            ),
        ]
        assert sealed and all(value.startswith("enc1:k2:") for value in sealed)
        # Still readable: the logs decrypt, and the order shows its sig.
        (submission,) = submissions_of(db, order["id"])
        logs = client.get(f"{SUBMISSIONS}/{submission.id}/logs", headers=admin)
        assert logs.status_code == 200 and logs.json()[0]["request_body"]
        view = client.get(f"/api/v1/orders/{order['id']}", headers=admin).json()
        assert view["items"][0]["dosage_text"].startswith("Take 1 capsule")


def test_an_order_cannot_be_cancelled_while_its_prescription_is_being_sent(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    order = paid_prescription_order(client, db, doctor, prescription_product(client, admin))
    with sessions.begin() as session:
        assert len(service.claim_due(session, now=utcnow(), limit=10)) == 1
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=doctor)
    assert response.status_code == 409, response.text
    assert response.json()["type"] == "/problems/pharmacy-submission-in-flight"
    assert _order_status(db, order["id"]) == "paid"
    assert not _outbox_has(db, _refund_key(db, order["id"]))
    assert submissions_of(db, order["id"])[0].status == "sending"


def test_submissions_are_listed_by_status_in_keyset_pages(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    product = prescription_product(client, admin)
    orders = [paid_prescription_order(client, db, doctor, product)["id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "pending", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(SUBMISSIONS, params=params, headers=admin)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [s["order_id"] for s in body["items"]]
        assert all(s["status"] == "pending" for s in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert set(orders) <= set(seen) and len(seen) == len(set(seen))
    assert client.get(SUBMISSIONS, params={"status": "lost"}, headers=admin).status_code == 422
    bad_cursor = client.get(SUBMISSIONS, params={"cursor": "not-a-cursor"}, headers=admin)
    assert bad_cursor.status_code in (400, 422)
    missing = client.post(f"{SUBMISSIONS}/{uuid.uuid4()}/resend", headers=admin)
    assert missing.status_code == 404
    assert client.get(f"{SUBMISSIONS}/{uuid.uuid4()}/logs", headers=admin).status_code == 404


def test_a_slow_pharmacy_is_sent_several_submissions_at_once(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    sessions: sessionmaker[Session],
    pharmacy_double: PharmacyState,
) -> None:
    create_pharmacy(client, admin, NAME, BASE_URL)
    product = prescription_product(client, admin)
    orders = [paid_prescription_order(client, db, doctor, product)["id"] for _ in range(4)]
    pharmacy_double.submit_delay_seconds = 0.5
    started = time.monotonic()
    report = flows.deliver_due(sessions, concurrency=4)
    elapsed = time.monotonic() - started
    assert report.delivered == 4
    assert elapsed < 4 * 0.5  # in parallel, not one after the other
    assert all(submissions_of(db, order)[0].status == "accepted" for order in orders)
