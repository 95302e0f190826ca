"""The outbox: enqueued once, delivered at least once, retried with backoff, dead-lettered, never
lost when a worker dies; and refunds delivered for real to the local Stripe stand-in."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine
from app.integrations.stripe.refunds import REFUND_TOPIC
from app.models import OutboxMessage, Payment
from app.models.base import utcnow
from app.outbox import service as outbox
from app.outbox.service import (
    BASE_DELAY,
    CLAIM_LEASE,
    MAX_ATTEMPTS,
    MAX_DELAY,
    Claimed,
    PermanentFailure,
)
from app.payments.flows import deliver_refund, record_refund_sent
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import Auth
from tests.fixtures.orders import ORDERS, create_product, place_order, receive_lot
from tests.fixtures.patients import Headers, Json, audit_entries, create_patient
from tests.fixtures.problems import assert_problem
from tests.fixtures.stripe import LocalStripe, signed, stripe_event

OUTBOX = "/api/v1/outbox"


def deliver_due(
    db: Session, sessions: sessionmaker[Session], handlers: dict[str, outbox.Handler]
) -> outbox.DeliveryReport:
    """`outbox.deliver_due` as a worker runs it, after the test's session committed: its
    savepoint is closed, so a later rolled-back request cannot undo what the worker recorded."""
    db.commit()
    return outbox.deliver_due(sessions, handlers)


@pytest.fixture
def topic() -> str:
    """A topic of the test's own, so delivery runs see only its messages."""
    return f"test.{uuid.uuid4().hex[:10]}"


class Recorder:
    """A handler that records its calls and fails as told."""

    def __init__(self, fail: Callable[[int], Exception | None] = lambda n: None) -> None:
        self.calls: list[Claimed] = []
        self.fail = fail

    def __call__(self, message: Claimed) -> None:
        self.calls.append(message)
        error = self.fail(len(self.calls))
        if error is not None:
            raise error


def message(db: Session, dedupe_key: str) -> OutboxMessage:
    db.expire_all()
    row = db.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    assert row is not None
    return row


def enqueue(db: Session, topic: str, payload: dict[str, Any] | None = None) -> str:
    key = f"key-{uuid.uuid4().hex}"
    outbox.enqueue(db, topic, key, payload or {"n": 1})
    db.commit()
    return key


def make_due(db: Session, dedupe_key: str) -> None:
    """Time passes: the message's retry is due now."""
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.dedupe_key == dedupe_key)
        .values(next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    db.commit()


def test_enqueue_is_idempotent_by_dedupe_key(db: Session, topic: str) -> None:
    key = f"refund-{uuid.uuid4()}"
    outbox.enqueue(db, topic, key, {"first": True})
    outbox.enqueue(db, topic, key, {"second": True})
    outbox.enqueue(db, "another.topic", key, {"third": True})
    db.commit()

    db.expire_all()
    rows = list(db.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key == key)))
    assert len(rows) == 1
    (row,) = rows
    assert (row.topic, row.payload, row.status, row.attempts) == (
        topic,
        {"first": True},
        "pending",
        0,
    )
    assert row.next_attempt_at <= utcnow()
    assert (row.claimed_until, row.last_error, row.delivered_at) == (None, None, None)


def test_deliver_due_calls_the_handler_and_marks_delivered(
    db: Session, sessions: sessionmaker[Session], topic: str
) -> None:
    key = enqueue(db, topic, {"payment_intent_id": "pi_123"})
    later = f"key-{uuid.uuid4().hex}"
    outbox.enqueue(db, topic, later, {"n": 2})
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.dedupe_key == later)
        .values(next_attempt_at=utcnow() + timedelta(minutes=5))
    )
    db.commit()
    handler = Recorder()

    report = deliver_due(db, sessions, {topic: handler})

    assert (report.delivered, report.retried, report.dead, report.errors) == (1, 0, 0, [])
    (call,) = handler.calls  # the one not yet due was left alone
    assert (call.topic, call.dedupe_key, call.payload, call.attempts) == (
        topic,
        key,
        {"payment_intent_id": "pi_123"},
        0,
    )
    row = message(db, key)
    assert (row.status, row.attempts, row.last_error, row.claimed_until) == (
        "delivered",
        1,
        None,
        None,
    )
    assert row.delivered_at is not None
    assert message(db, later).status == "pending"

    again = deliver_due(db, sessions, {topic: handler})
    assert (again.delivered, len(handler.calls)) == (0, 1)


def test_other_topics_are_not_claimed(
    db: Session, sessions: sessionmaker[Session], topic: str
) -> None:
    key = enqueue(db, topic)
    report = deliver_due(db, sessions, {f"{topic}.other": Recorder()})
    assert report.delivered == 0
    assert message(db, key).status == "pending"


def test_a_failing_handler_retries_with_backoff_then_dead_letters(
    db: Session, sessions: sessionmaker[Session], topic: str
) -> None:
    key = enqueue(db, topic)
    handler = Recorder(fail=lambda n: ConnectionError(f"receiver down #{n}"))
    delays: list[timedelta] = []

    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = utcnow()
        report = deliver_due(db, sessions, {topic: handler})
        finished = utcnow()
        row = message(db, key)
        assert row.attempts == attempt
        assert row.last_error == f"ConnectionError: receiver down #{attempt}"
        assert row.claimed_until is None
        assert handler.calls[-1].attempts == attempt - 1
        if attempt < MAX_ATTEMPTS:
            assert (report.retried, report.dead) == (1, 0)
            assert row.status == "pending"
            ceiling = min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1))
            # Full jitter between half the ceiling and the ceiling, counted from the failure.
            assert started + ceiling * 0.5 <= row.next_attempt_at <= finished + ceiling
            delays.append(row.next_attempt_at - finished)
            # Not due yet: another run leaves it alone.
            assert deliver_due(db, sessions, {topic: handler}).retried == 0
            assert len(handler.calls) == attempt
            make_due(db, key)
        else:
            assert (report.retried, report.dead) == (0, 1)
            assert report.errors == [f"ConnectionError: receiver down #{attempt}"]
            assert row.status == "dead"
            assert row.delivered_at is None

    # The delays grow (exponentially, jitter within a factor of two).
    assert delays[-1] > delays[0] * 16
    assert all(d > timedelta(0) for d in delays)
    # A dead letter is never delivered again by the worker.
    make_due(db, key)
    assert deliver_due(db, sessions, {topic: handler}).dead == 0
    assert len(handler.calls) == MAX_ATTEMPTS
    assert message(db, key).status == "dead"


def test_backoff_is_capped() -> None:
    for attempts in (*range(1, MAX_ATTEMPTS + 1), 12, 20):
        delay = outbox.backoff(attempts)
        ceiling = min(MAX_DELAY, BASE_DELAY * 2 ** (attempts - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    assert outbox.backoff(20) >= MAX_DELAY * 0.5


def test_a_permanent_failure_is_dead_lettered_at_once(
    db: Session, sessions: sessionmaker[Session], topic: str
) -> None:
    key = enqueue(db, topic)
    handler = Recorder(fail=lambda n: PermanentFailure("No such payment_intent: 'pi_gone'"))

    report = deliver_due(db, sessions, {topic: handler})

    assert (report.delivered, report.retried, report.dead) == (0, 0, 1)
    row = message(db, key)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == "PermanentFailure: No such payment_intent: 'pi_gone'"
    make_due(db, key)
    deliver_due(db, sessions, {topic: handler})
    assert len(handler.calls) == 1


@pytest.fixture
def committed(fresh_db: TestDatabase) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database of the test's own, for real concurrent workers."""
    engine = make_engine(fresh_db.app_url, pool_size=4)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def test_a_worker_killed_after_claiming_loses_nothing(
    committed: sessionmaker[Session], topic: str
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    with committed.begin() as session:
        outbox.enqueue(session, topic, key, {"n": 1})

    # Worker A claims; while its transaction is open, worker B skips the locked row.
    worker_a = committed()
    worker_a.begin()
    (claimed,) = outbox.claim_due(worker_a, [topic], limit=10)
    assert claimed.dedupe_key == key
    with committed.begin() as worker_b:
        assert outbox.claim_due(worker_b, [topic], limit=10) == []
    # A commits its claim and is killed before it calls the receiver or records anything.
    worker_a.commit()
    worker_a.close()

    # While the lease lasts, no other worker delivers it (no double call to the receiver).
    handler = Recorder()
    with committed.begin() as worker_b:
        assert outbox.claim_due(worker_b, [topic], limit=10) == []
    assert outbox.deliver_due(committed, {topic: handler}).delivered == 0
    assert handler.calls == []
    with committed() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == key))
        assert row is not None
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.claimed_until is not None
        lease_end: datetime = row.claimed_until
        assert lease_end > utcnow() + CLAIM_LEASE - timedelta(minutes=1)

    # Once the lease has lapsed, another worker claims it again.
    with committed() as probe, probe.begin():
        beyond = lease_end + timedelta(seconds=1)
        (again,) = outbox.claim_due(probe, [topic], limit=10, now=beyond)
        assert (again.id, again.attempts) == (claimed.id, 0)
        probe.rollback()  # only looking

    # Time passes (the lease lapses) and the next run delivers it: nothing was lost.
    with committed.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.dedupe_key == key)
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    report = outbox.deliver_due(committed, {topic: handler})
    assert report.delivered == 1
    assert [c.dedupe_key for c in handler.calls] == [key]
    with committed() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == key))
        assert row is not None
        assert (row.status, row.attempts, row.claimed_until) == ("delivered", 1, None)


# --- Admin API ---------------------------------------------------------------------------------


def test_an_admin_resends_a_dead_letter(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    doctor: Headers,
    topic: str,
) -> None:
    key = enqueue(db, topic, {"payment_intent_id": "pi_resend"})
    deliver_due(db, sessions, {topic: Recorder(fail=lambda n: PermanentFailure("refused"))})
    dead = message(db, key)
    assert dead.status == "dead"

    response = client.get(OUTBOX, params={"status": "dead"}, headers=admin)
    assert response.status_code == 200, response.text
    listed = {item["id"]: item for item in response.json()["items"]}
    assert listed[str(dead.id)]["last_error"] == "PermanentFailure: refused"
    assert listed[str(dead.id)]["status"] == "dead"
    assert listed[str(dead.id)]["payload"] == {"payment_intent_id": "pi_resend"}
    assert all(item["status"] == "dead" for item in listed.values())
    pending = client.get(OUTBOX, params={"status": "pending"}, headers=admin).json()["items"]
    assert str(dead.id) not in {item["id"] for item in pending}

    assert_problem(client.get(OUTBOX, headers=doctor), 403, "/problems/forbidden")
    forbidden = client.post(f"{OUTBOX}/{dead.id}/resend", headers=doctor)
    assert_problem(forbidden, 403, "/problems/forbidden")
    assert message(db, key).status == "dead"

    response = client.post(f"{OUTBOX}/{dead.id}/resend", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["attempts"]) == ("pending", 0)
    assert body["last_error"] == "PermanentFailure: refused"  # kept for the record
    (entry,) = audit_entries(db, dead.id, "outbox.resent")
    assert entry.actor_subject == "admin-main"
    assert entry.after == {"status": "pending", "topic": topic}
    dead_now = client.get(OUTBOX, params={"status": "dead"}, headers=admin).json()["items"]
    assert str(dead.id) not in {item["id"] for item in dead_now}

    # Only a dead letter can be re-sent.
    again = client.post(f"{OUTBOX}/{dead.id}/resend", headers=admin)
    problem = assert_problem(again, 409, "/problems/invalid-state-transition")
    assert problem["current_status"] == "pending"
    missing = client.post(f"{OUTBOX}/{uuid.uuid4()}/resend", headers=admin)
    assert_problem(missing, 404, "/problems/not-found")

    # Re-sent, it is delivered by the next run; a delivered message cannot be re-sent.
    handler = Recorder()
    assert deliver_due(db, sessions, {topic: handler}).delivered == 1
    assert [c.dedupe_key for c in handler.calls] == [key]
    delivered = client.post(f"{OUTBOX}/{dead.id}/resend", headers=admin)
    assert_problem(delivered, 409, "/problems/invalid-state-transition")


# --- Refunds, for real -------------------------------------------------------------------------


def test_cancelling_a_paid_order_refunds_it_at_stripe_exactly_once(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    auth: Auth,
    localstripe: LocalStripe,
) -> None:
    doctor = auth("doctor", sub=f"doctor-refund-{uuid.uuid4().hex[:6]}")
    patient: Json = create_patient(client, doctor)
    product = create_product(client, admin, price_cents=4200)
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 3))
    response = client.post(
        "/api/v1/payments/create-intent", json={"order_id": order["id"]}, headers=doctor
    )
    assert response.status_code == 200, response.text
    intent_id = response.json()["payment_intent_id"]

    # The patient pays at Stripe; Stripe's own event is delivered to the webhook, signed.
    localstripe.pay_by_card(intent_id)
    (event,) = localstripe.events(intent_id, "payment_intent.succeeded")
    body, headers = signed(event)
    response = client.post("/api/v1/payments/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "order paid"

    response = client.post(
        f"{ORDERS}/{order['id']}/cancel",
        json={"reason": "patient_request", "note": "Patient moved away"},
        headers=doctor,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    db.expire_all()
    payment = db.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))
    assert payment is not None
    (queued,) = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == REFUND_TOPIC))
    assert queued.dedupe_key == f"refund-{payment.id}"
    assert queued.payload == {"payment_id": str(payment.id), "payment_intent_id": intent_id}
    assert localstripe.refunds(intent_id) == []  # nothing was sent while the order was locked

    report = deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund})

    assert (report.delivered, report.errors) == (1, [])
    (refund,) = localstripe.refunds(intent_id)
    assert (refund["amount"], refund["currency"], refund["status"]) == (
        3 * 4200,
        "usd",
        "succeeded",
    )
    latest = localstripe.intent(intent_id)["latest_charge"]
    charge = localstripe.get(f"/v1/charges/{latest['id'] if isinstance(latest, dict) else latest}")
    assert (charge["amount_refunded"], charge["refunded"]) == (3 * 4200, True)
    assert message(db, queued.dedupe_key).status == "delivered"

    # Running delivery again (or cancelling again) does not refund twice.
    assert deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund}).delivered == 0
    again = client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
    assert_problem(again, 409, "/problems/invalid-state-transition")
    assert deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund}).delivered == 0
    assert len(localstripe.refunds(intent_id)) == 1
    db.expire_all()
    assert db.scalar(select(func.count()).where(OutboxMessage.topic == REFUND_TOPIC)) == 1

    # Stripe's charge.refunded (the charge as Stripe now holds it) closes the loop.
    refunded = stripe_event("charge.refunded", charge)
    body, headers = signed(refunded)
    response = client.post("/api/v1/payments/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text
    db.expire_all()
    payment = db.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))
    assert payment is not None
    assert (payment.refunded_cents, payment.status) == (3 * 4200, "succeeded")


def test_a_refund_stripe_refuses_is_dead_lettered(
    db: Session, sessions: sessionmaker[Session], localstripe: LocalStripe
) -> None:
    """An intent Stripe does not know (or cannot refund) is a permanent failure, not a retry."""
    payload = {"payment_id": str(uuid.uuid4()), "payment_intent_id": "pi_unknown_to_stripe"}
    key = f"refund-{uuid.uuid4()}"
    outbox.enqueue(db, REFUND_TOPIC, key, payload)
    db.commit()

    report = deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund})

    assert report.dead == 1
    row = message(db, key)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error is not None and row.last_error.startswith("PermanentFailure")
    assert row.payload == payload


def test_a_late_outcome_from_a_lapsed_claim_does_not_overwrite_a_delivery(db: Session) -> None:
    outbox.enqueue(db, "test.topic", "late-claim-1", {"n": 1})
    db.flush()
    message = db.scalars(
        __import__("sqlalchemy")
        .select(OutboxMessage)
        .where(OutboxMessage.dedupe_key == "late-claim-1")
    ).one()
    assert outbox.record_outcome(db, message.id, None) == "delivered"
    # The first worker, whose claim had lapsed, now reports a permanent failure.
    assert outbox.record_outcome(db, message.id, "boom", permanent=True) == "delivered"
    db.refresh(message)
    assert message.status == "delivered" and message.attempts == 1


def test_a_refund_sent_by_the_worker_is_audited_and_recorded_at_once(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    auth: Auth,
    localstripe: LocalStripe,
) -> None:
    doctor = auth("doctor", sub=f"doctor-refund-{uuid.uuid4().hex[:6]}")
    patient: Json = create_patient(client, doctor)
    product = create_product(client, admin, price_cents=1500)
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    response = client.post(
        "/api/v1/payments/create-intent", json={"order_id": order["id"]}, headers=doctor
    )
    intent_id = response.json()["payment_intent_id"]
    localstripe.pay_by_card(intent_id)
    (event,) = localstripe.events(intent_id, "payment_intent.succeeded")
    body, headers = signed(event)
    assert client.post("/api/v1/payments/webhook", content=body, headers=headers).is_success
    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
    assert response.status_code == 200, response.text

    assert deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund}).delivered == 1

    (refund,) = localstripe.refunds(intent_id)
    db.expire_all()
    payment = db.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))
    assert payment is not None
    # The portal shows the refund without waiting for Stripe's webhook.
    assert payment.refunded_cents == 3000
    worker = "system:outbox-worker"
    (sent,) = audit_entries(db, order["id"], "payment.refund_sent")
    assert (sent.actor_subject, sent.before) == (worker, {"refunded_cents": 0})
    assert sent.after == {
        "payment_intent_id": intent_id,
        "refund_id": refund["id"],
        "amount_cents": 3000,
        "status": "succeeded",
    }
    (refunded,) = audit_entries(db, order["id"], "payment.refunded")
    assert refunded.actor_subject == worker
    assert (refunded.before, refunded.after["refunded_cents"]) == ({"refunded_cents": 0}, 3000)

    # Stripe's own events for that refund, arriving later, change nothing and add no rows.
    latest = localstripe.intent(intent_id)["latest_charge"]
    charge = localstripe.get(f"/v1/charges/{latest['id'] if isinstance(latest, dict) else latest}")
    for refund_event in (
        stripe_event("refund.created", refund),
        stripe_event("charge.refunded", charge),
    ):
        body, headers = signed(refund_event)
        assert client.post("/api/v1/payments/webhook", content=body, headers=headers).is_success
    assert len(audit_entries(db, order["id"], "payment.refunded")) == 1
    assert len(audit_entries(db, order["id"], "payment.refund_recorded")) == 1
    # Delivering again (a lapsed claim re-run) neither refunds nor audits twice.
    assert deliver_due(db, sessions, {REFUND_TOPIC: deliver_refund}).delivered == 0
    assert len(audit_entries(db, order["id"], "payment.refund_sent")) == 1


def test_a_refund_after_a_partial_refund_at_stripe_records_the_payment_refunded_in_full(
    client: TestClient, db: Session, admin: Headers, auth: Auth, localstripe: LocalStripe
) -> None:
    """Staff cancel an order partly refunded in the Dashboard: the worker refunds the rest.

    Stripe answers the portal's refund (no amount) with a refund of what remained. localstripe
    answers with the whole charge again, so Stripe's answer is recorded here directly.
    """
    doctor = auth("doctor", sub=f"doctor-refund-{uuid.uuid4().hex[:6]}")
    patient: Json = create_patient(client, doctor)
    product = create_product(client, admin, price_cents=2000)
    receive_lot(client, admin, product["id"], 10)
    order = place_order(client, doctor, patient["id"], (product["id"], 2))
    response = client.post(
        "/api/v1/payments/create-intent", json={"order_id": order["id"]}, headers=doctor
    )
    intent_id = response.json()["payment_intent_id"]
    localstripe.pay_by_card(intent_id)
    (event,) = localstripe.events(intent_id, "payment_intent.succeeded")
    for delivery in (
        event,
        # Stripe's charge after a 1,000-cent refund in the Dashboard, without its refund list.
        stripe_event(
            "charge.refunded",
            {"id": "ch_partial", "payment_intent": intent_id, "amount_refunded": 1000},
        ),
    ):
        body, headers = signed(delivery)
        assert client.post("/api/v1/payments/webhook", content=body, headers=headers).is_success
    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
    assert response.status_code == 200, response.text
    db.expire_all()
    payment = db.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))
    assert payment is not None

    rest = {"id": "re_rest", "amount": 3000, "currency": "usd", "status": "succeeded"}
    record_refund_sent(db, payment.id, rest)
    db.commit()

    db.expire_all()
    assert payment.refunded_cents == 4000
    amounts = [
        e.after["refunded_cents"] for e in audit_entries(db, order["id"], "payment.refunded")
    ]
    assert amounts == [1000, 4000]


def test_a_delivery_whose_recording_fails_is_retried(
    db: Session, sessions: sessionmaker[Session], topic: str
) -> None:
    key = enqueue(db, topic)
    recorded: list[str] = []

    def broken(session: Session) -> None:
        raise RuntimeError("database went away")

    def working(session: Session) -> None:
        recorded.append("done")

    calls = Recorder()
    report = deliver_due(db, sessions, {topic: lambda m: (calls(m), broken)[1]})
    assert (report.delivered, report.retried) == (0, 1)
    row = message(db, key)
    assert row.status == "pending"
    assert row.last_error == "recording the delivery failed: RuntimeError: database went away"

    make_due(db, key)
    report = deliver_due(db, sessions, {topic: lambda m: (calls(m), working)[1]})
    assert report.delivered == 1
    assert (len(calls.calls), recorded) == (2, ["done"])
    assert message(db, key).status == "delivered"
