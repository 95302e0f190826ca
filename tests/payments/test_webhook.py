"""The Stripe webhook: verified Stripe-format signatures, each event applied once, never backwards.

Most tests sign Stripe-shaped events themselves (HMAC-SHA256 of `{t}.{payload}`, as Stripe
does) and post them through the API. One test lets localstripe complete a card payment and
deliver its own signed webhook to a live server; another fires 1,400 deliveries (repeats,
shuffled, 8 at a time) at a live server with two worker processes.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.audit.service import seal, verify_chain
from app.db import make_engine
from app.integrations.stripe.refunds import REFUND_TOPIC
from app.models import AuditEntry, Order, OutboxMessage, Payment, StripeEvent
from app.models.base import utcnow
from app.orders import flows as order_flows
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.orders import ORDERS, get_order, place_order
from tests.fixtures.patients import Headers, Json, audit_entries
from tests.fixtures.payments import WEBHOOK, create_intent, deliver, order_status, payment_of
from tests.fixtures.problems import assert_problem
from tests.fixtures.stripe import (
    LocalStripe,
    charge_event,
    free_port,
    intent_event,
    signature,
    signed,
)
from tests.payments.live_server import doctor_token, live_server, seed

JSON = {"Content-Type": "application/json; charset=utf-8"}  # what Stripe sends
BAD_SIGNATURE = "/problems/invalid-webhook-signature"


def stored_event(db: Session, event_id: str) -> StripeEvent | None:
    db.expire_all()
    return db.get(StripeEvent, event_id)


def count(db: Session, model: Any) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model)) or 0


# --- Signatures ---------------------------------------------------------------------------


def test_a_bad_signature_is_refused_and_nothing_is_stored(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    event = intent_event("payment_intent.succeeded", intent_id)
    body, headers = signed(event)
    events_before = count(db, StripeEvent)
    wrong_secret = signed(event, secret="whsec_not_the_one")[1]
    tampered = body.replace(intent_id.encode(), b"pi_someone_else")
    v0_only = {**JSON, "Stripe-Signature": headers["Stripe-Signature"].replace("v1=", "v0=")}

    for content, sent in (
        (body, wrong_secret),
        (tampered, headers),  # signed, then changed in transit
        (body, {**JSON, "Stripe-Signature": "t=1,v1=deadbeef"}),
        (body, {**JSON, "Stripe-Signature": "garbage"}),
        (body, v0_only),
    ):
        response = client.post(WEBHOOK, content=content, headers=sent)
        assert_problem(response, 400, BAD_SIGNATURE)

    assert count(db, StripeEvent) == events_before
    assert stored_event(db, event["id"]) is None
    assert order_status(db, order["id"]) == "pending"
    assert payment_of(db, intent_id).status == "requires_payment_method"


def test_a_stale_timestamp_is_refused_a_fresh_one_accepted(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    event = intent_event("payment_intent.succeeded", intent_id)
    body, _ = signed(event)
    stale = signature(body, timestamp=int(time.time()) - 301)  # tolerance: 300 s
    response = client.post(WEBHOOK, content=body, headers={**JSON, "Stripe-Signature": stale})
    assert_problem(response, 400, BAD_SIGNATURE)
    assert stored_event(db, event["id"]) is None
    assert order_status(db, order["id"]) == "pending"

    # The same bytes, correctly signed within the tolerance, are accepted.
    recent = signature(body, timestamp=int(time.time()) - 240)
    response = client.post(WEBHOOK, content=body, headers={**JSON, "Stripe-Signature": recent})
    assert response.status_code == 200, response.text
    assert order_status(db, order["id"]) == "paid"


def test_a_missing_signature_is_refused(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    event = intent_event("payment_intent.succeeded", intent_id)
    body, _ = signed(event)
    response = client.post(WEBHOOK, content=body, headers=JSON)
    assert_problem(response, 400, BAD_SIGNATURE)
    empty = client.post(WEBHOOK, content=body, headers={**JSON, "Stripe-Signature": ""})
    assert_problem(empty, 400, BAD_SIGNATURE)
    assert stored_event(db, event["id"]) is None
    assert order_status(db, order["id"]) == "pending"


def test_a_signed_body_that_is_not_a_stripe_event_is_refused(
    client: TestClient, db: Session
) -> None:
    for body in (b"not json", b"[1, 2]", b'{"type": "payment_intent.succeeded"}'):
        headers = {**JSON, "Stripe-Signature": signature(body)}
        assert_problem(client.post(WEBHOOK, content=body, headers=headers), 400, BAD_SIGNATURE)


# --- Applying events ------------------------------------------------------------------------


def test_succeeded_pays_the_order(
    client: TestClient, db: Session, doctor: Headers, order: Json, intent_id: str
) -> None:
    event = intent_event(
        "payment_intent.succeeded",
        intent_id,
        amount=order["total_cents"],
        payment_method="pm_card",
        payment_method_types=["card"],
    )
    answer = deliver(client, event)

    assert answer["outcome"] == "order paid"
    assert get_order(client, doctor, order["id"])["status"] == "paid"
    payment = payment_of(db, intent_id)
    assert payment.status == "succeeded"
    assert payment.succeeded_at is not None
    assert payment.method == "card"
    inbox = stored_event(db, event["id"])
    assert inbox is not None
    assert (inbox.type, inbox.outcome) == ("payment_intent.succeeded", "order paid")
    assert inbox.payload == event
    (paid,) = audit_entries(db, order["id"], "order.paid")
    assert paid.actor_subject == "system:stripe-webhook"
    assert (paid.before, paid.after) == ({"status": "pending"}, {"status": "paid"})


def test_the_same_event_twice_is_applied_once(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    event = intent_event("payment_intent.succeeded", intent_id)
    first = deliver(client, event)
    second = deliver(client, event)  # Stripe retries: same id, freshly signed
    third = deliver(client, event)

    assert first["outcome"] == "order paid"
    assert second["outcome"].startswith("duplicate")
    assert third["outcome"].startswith("duplicate")
    assert order_status(db, order["id"]) == "paid"
    assert len(audit_entries(db, order["id"], "order.paid")) == 1
    db.expire_all()
    assert db.scalar(select(func.count()).where(StripeEvent.id == event["id"])) == 1

    # A second, distinct succeeded event for the same intent changes nothing either.
    other = deliver(client, intent_event("payment_intent.succeeded", intent_id))
    assert other["outcome"] == "ignored: payment already succeeded"
    assert len(audit_entries(db, order["id"], "order.paid")) == 1


def test_a_failure_arriving_after_success_does_not_move_the_payment_back(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    failed = intent_event("payment_intent.payment_failed", intent_id)
    succeeded = intent_event("payment_intent.succeeded", intent_id)
    processing = intent_event("payment_intent.processing", intent_id)

    assert deliver(client, succeeded)["outcome"] == "order paid"
    assert deliver(client, failed)["outcome"] == "ignored: payment already succeeded"
    assert deliver(client, processing)["outcome"] == "ignored: payment already succeeded"

    payment = payment_of(db, intent_id)
    assert (payment.status, payment.failure_reason) == ("succeeded", None)
    assert order_status(db, order["id"]) == "paid"
    assert len(audit_entries(db, order["id"], "order.paid")) == 1
    assert stored_event(db, failed["id"]) is not None  # received, recorded, not applied


def test_a_failed_card_payment_keeps_the_order_payable(
    client: TestClient, db: Session, doctor: Headers, order: Json, intent_id: str
) -> None:
    answer = deliver(client, intent_event("payment_intent.payment_failed", intent_id))

    assert answer["outcome"] == "payment failed; order stays pending"
    payment = payment_of(db, intent_id)
    assert payment.status == "requires_payment_method"
    assert payment.failure_reason == "Your card was declined."
    assert order_status(db, order["id"]) == "pending"
    # The patient can try again with the same intent.
    assert create_intent(client, doctor, order["id"])["payment_intent_id"] == intent_id
    assert deliver(client, intent_event("payment_intent.succeeded", intent_id))["outcome"] == (
        "order paid"
    )


def test_a_processing_bank_debit_keeps_the_order_from_expiring(
    client: TestClient,
    db: Session,
    doctor: Headers,
    patient: Json,
    product: Json,
    order: Json,
    intent_id: str,
) -> None:
    unpaid = place_order(client, doctor, patient["id"], (product["id"], 1))
    answer = deliver(
        client,
        intent_event(
            "payment_intent.processing",
            intent_id,
            payment_method="pm_bank",
            payment_method_types=["us_bank_account"],
        ),
    )
    assert answer["outcome"] == "payment processing (bank debit)"
    payment = payment_of(db, intent_id)
    assert (payment.status, payment.method) == ("processing", "us_bank_account")

    later = utcnow() + timedelta(hours=24 * 30)  # long after every payment window closed
    expired = order_flows.expire_unpaid_orders(db, Actor.system("expiry-test"), now=later)
    db.commit()

    assert expired == 1  # the other, unpaid order: expiry did run
    assert order_status(db, unpaid["id"]) == "cancelled"
    assert order_status(db, order["id"]) == "pending"
    # The debit clears: the order is paid, not refunded.
    assert deliver(client, intent_event("payment_intent.succeeded", intent_id))["outcome"] == (
        "order paid"
    )
    assert order_status(db, order["id"]) == "paid"


def test_a_bank_debit_that_fails_after_processing_frees_the_order(
    client: TestClient, db: Session, doctor: Headers, order: Json, intent_id: str
) -> None:
    bank = {"payment_method": "pm_bank", "payment_method_types": ["us_bank_account"]}
    deliver(client, intent_event("payment_intent.processing", intent_id, **bank))
    # A card declined before the debit started, delivered late: it must not undo `processing`.
    declined_earlier = intent_event("payment_intent.payment_failed", intent_id)
    declined_earlier["created"] = int(time.time()) - 120
    assert deliver(client, declined_earlier)["outcome"] == "ignored: payment already processing"
    assert payment_of(db, intent_id).status == "processing"

    # Three days later the bank returns the debit: Stripe sends a (newer) payment_failed.
    payment = payment_of(db, intent_id)
    payment.updated_at = utcnow() - timedelta(days=3)
    db.commit()
    returned = intent_event(
        "payment_intent.payment_failed",
        intent_id,
        last_payment_error={"code": "insufficient_funds", "message": "Insufficient funds."},
    )
    answer = deliver(client, returned)

    assert answer["outcome"] == "payment failed; order stays pending"
    payment = payment_of(db, intent_id)
    assert (payment.status, payment.failure_reason) == (
        "requires_payment_method",
        "Insufficient funds.",
    )
    assert order_status(db, order["id"]) == "pending"
    # The patient can pay again, and an unpaid order expires as any other does.
    assert create_intent(client, doctor, order["id"])["payment_intent_id"] == intent_id
    later = utcnow() + timedelta(hours=24 * 30)
    assert order_flows.expire_unpaid_orders(db, Actor.system("expiry-test"), now=later) == 1
    assert order_status(db, order["id"]) == "cancelled"


def test_success_for_an_order_that_expired_meanwhile_queues_a_refund(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    later = utcnow() + timedelta(hours=24 * 30)
    assert order_flows.expire_unpaid_orders(db, Actor.system("expiry-test"), now=later) == 1
    db.commit()
    assert order_status(db, order["id"]) == "cancelled"

    event = intent_event("payment_intent.succeeded", intent_id)
    answer = deliver(client, event)

    assert answer["outcome"] == "refund queued: order is cancelled"
    assert order_status(db, order["id"]) == "cancelled"
    payment = payment_of(db, intent_id)
    assert payment.status == "succeeded"
    db.expire_all()
    (message,) = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == REFUND_TOPIC))
    assert message.dedupe_key == f"refund-{payment.id}"
    assert message.payload == {"payment_id": str(payment.id), "payment_intent_id": intent_id}
    assert (message.status, message.attempts) == ("pending", 0)
    assert audit_entries(db, order["id"], "order.paid") == []
    # Stripe delivering it again does not queue a second refund.
    assert deliver(client, event)["outcome"].startswith("duplicate")
    db.expire_all()
    refunds = db.scalar(
        select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == REFUND_TOPIC)
    )
    assert refunds == 1


def test_success_of_a_superseded_intent_does_not_pay_the_edited_order(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    product: Json,
    intent_id: str,
) -> None:
    """The patient's open checkout page still holds the intent for the old total."""
    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 5}]},
        headers=doctor,
    )
    assert response.status_code == 200, response.text
    new_intent = create_intent(client, doctor, order["id"])["payment_intent_id"]

    answer = deliver(client, intent_event("payment_intent.succeeded", intent_id))

    assert answer["outcome"].startswith("refund queued")
    assert order_status(db, order["id"]) == "pending"  # 25.98 paid does not settle 64.95
    old = payment_of(db, intent_id)
    db.expire_all()
    (message,) = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == REFUND_TOPIC))
    assert message.payload["payment_intent_id"] == intent_id == old.stripe_payment_intent_id
    # The intent for the current total still pays the order.
    answer = deliver(client, intent_event("payment_intent.succeeded", new_intent))
    assert answer["outcome"] == "order paid"
    assert order_status(db, order["id"]) == "paid"


def test_charge_refunded_records_the_refunded_amount(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    total = order["total_cents"]

    answer = deliver(client, charge_event("charge.refunded", intent_id, amount_refunded=1000))
    assert answer["outcome"] == "refunded 1000 cents"
    assert payment_of(db, intent_id).refunded_cents == 1000
    # An older event with a smaller amount, delivered late, does not lower it...
    deliver(client, charge_event("charge.refunded", intent_id, amount_refunded=500))
    assert payment_of(db, intent_id).refunded_cents == 1000
    # ...the full refund is recorded, and nothing beyond the amount paid.
    deliver(client, charge_event("charge.refunded", intent_id, amount_refunded=total))
    assert payment_of(db, intent_id).refunded_cents == total
    deliver(client, charge_event("charge.refunded", intent_id, amount_refunded=total + 999))
    assert payment_of(db, intent_id).refunded_cents == total


def test_a_dispute_is_recorded(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    answer = deliver(
        client,
        charge_event(
            "charge.dispute.created", intent_id, charge="ch_x", amount=order["total_cents"]
        ),
    )
    assert answer["outcome"] == "dispute recorded"
    assert payment_of(db, intent_id).disputed is True
    (entry,) = audit_entries(db, order["id"], "payment.disputed")
    assert entry.actor_subject == "system:stripe-webhook"


def test_events_the_portal_does_not_know_are_stored_and_ignored(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    unknown_intent = intent_event("payment_intent.succeeded", "pi_not_ours")
    assert (
        deliver(client, unknown_intent)["outcome"] == "ignored: unknown payment intent pi_not_ours"
    )
    unknown_charge = charge_event("charge.refunded", "pi_not_ours", amount_refunded=5)
    assert deliver(client, unknown_charge)["outcome"] == "ignored: unknown charge"
    other = intent_event("customer.created", intent_id)
    assert deliver(client, other)["outcome"] == "ignored: customer.created"
    for event in (unknown_intent, unknown_charge, other):
        assert stored_event(db, event["id"]) is not None
    assert order_status(db, order["id"]) == "pending"


# --- Over real HTTP ---------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_localstripe_pays_the_order_through_its_own_signed_webhook(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, localstripe: LocalStripe, tmp_path: Path
) -> None:
    seeded = seed(fresh_db, units=10)
    log_path = tmp_path / "uvicorn.log"
    headers = {"Authorization": f"Bearer {doctor_token(jwt_issuer)}"}
    body = {
        "patient_id": str(seeded.patient_id),
        "items": [{"product_id": str(seeded.product_id), "quantity": 2}],
    }

    with (
        live_server(fresh_db, jwt_issuer, localstripe, log_path, access_log=True) as base,
        httpx.Client(base_url=base, headers=headers, timeout=20) as api,
    ):
        localstripe.register_webhook(base + WEBHOOK)
        try:

            def place_and_intend() -> tuple[str, str]:
                response = api.post(ORDERS, json=body)
                assert response.status_code == 201, response.text
                order_id = response.json()["id"]
                response = api.post("/api/v1/payments/create-intent", json={"order_id": order_id})
                assert response.status_code == 200, response.text
                return order_id, response.json()["payment_intent_id"]

            def status_of(order_id: str) -> str:
                response = api.get(f"{ORDERS}/{order_id}")
                assert response.status_code == 200, response.text
                return str(response.json()["status"])

            order_id, intent_id = place_and_intend()
            assert localstripe.intent(intent_id)["amount"] == 2 * seeded.price_cents
            localstripe.pay_by_card(intent_id)  # the webhook follows about a second later
            _wait_for(lambda: status_of(order_id) == "paid", 20, f"order {order_id} paid")

            # The same stand-in signing with a secret the portal does not hold is refused.
            localstripe.register_webhook(base + WEBHOOK, secret="whsec_an_attacker")
            forged_order, forged_intent = place_and_intend()
            localstripe.pay_by_card(forged_intent)
            _wait_for(
                lambda: f'"POST {WEBHOOK} HTTP/1.1" 400' in log_path.read_text(),
                20,
                "the forged webhook to arrive",
            )
            time.sleep(1)  # the other events of that payment, sent at the same moment
            assert status_of(forged_order) == "pending"
        finally:
            # Later tests' Stripe activity must not be sent to this (stopped) server's port.
            localstripe.register_webhook(f"http://127.0.0.1:{free_port()}/gone")

    (succeeded,) = localstripe.events(intent_id, "payment_intent.succeeded")
    (forged,) = localstripe.events(forged_intent, "payment_intent.succeeded")
    engine = make_engine(fresh_db.owner_url, pool_size=1)
    try:
        with Session(engine) as session:
            inbox = session.get(StripeEvent, succeeded["id"])
            assert inbox is not None, log_path.read_text()[-3000:]
            assert inbox.outcome == "order paid"
            assert inbox.payload["data"]["object"]["metadata"] == {"order_id": order_id}
            payment = session.scalar(
                select(Payment).where(Payment.stripe_payment_intent_id == intent_id)
            )
            assert payment is not None
            assert (payment.status, payment.amount_cents) == ("succeeded", 2 * seeded.price_cents)
            assert session.get(StripeEvent, forged["id"]) is None
            forged_payment = session.scalar(
                select(Payment).where(Payment.stripe_payment_intent_id == forged_intent)
            )
            assert forged_payment is not None
            assert forged_payment.status == "requires_payment_method"
            paid_rows = session.scalars(
                select(AuditEntry.entity_id).where(AuditEntry.action == "order.paid")
            ).all()
            assert paid_rows == [order_id]
    finally:
        engine.dispose()


STRESS_ORDERS = 300
STRESS_EVENTS = 1000
REPEATED_SHARE = 0.2
CONCURRENCY = 8
RANK = {"requires_payment_method": 0, "processing": 2, "succeeded": 3}


def _stress_seed(database: TestDatabase) -> dict[str, uuid.UUID]:
    """STRESS_ORDERS pending orders, each with a payments row: intent id -> order id."""
    seeded = seed(database, units=STRESS_ORDERS)
    engine = make_engine(database.app_url, pool_size=1)
    intents: dict[str, uuid.UUID] = {}
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            line = OrderLine(product_id=seeded.product_id, quantity=1)
            for _ in range(STRESS_ORDERS):
                order = orders.create_order(
                    session, seeded.doctor, OrderCreate(patient_id=seeded.patient_id, items=[line])
                ).order
                intent_id = "pi_stress_" + uuid.uuid4().hex[:16]
                session.add(
                    Payment(
                        order_id=order.id,
                        stripe_payment_intent_id=intent_id,
                        status="requires_payment_method",
                        amount_cents=order.total_cents,
                        currency=order.currency,
                    )
                )
                intents[intent_id] = order.id
        return intents
    finally:
        engine.dispose()


class Watcher(threading.Thread):
    """Samples every payment's and order's status while the events land, and notes any that
    ever moves backwards."""

    def __init__(self, database: TestDatabase) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(database.owner_url, pool_size=1)
        self.stop = threading.Event()
        self.samples = 0
        self.backwards: list[str] = []
        self.payment_rank: dict[uuid.UUID, int] = {}
        self.order_paid: set[uuid.UUID] = set()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.sample()
                time.sleep(0.05)
            self.sample()
        finally:
            self.engine.dispose()

    def sample(self) -> None:
        with Session(self.engine) as session:
            for payment_id, status in session.execute(select(Payment.id, Payment.status)):
                rank = RANK[status]
                if rank < self.payment_rank.get(payment_id, 0):
                    self.backwards.append(f"payment {payment_id} went back to {status}")
                self.payment_rank[payment_id] = max(rank, self.payment_rank.get(payment_id, 0))
            for order_id, status in session.execute(select(Order.id, Order.status)):
                if status == "paid":
                    self.order_paid.add(order_id)
                elif order_id in self.order_paid:
                    self.backwards.append(f"order {order_id} went back to {status}")
        self.samples += 1


def test_a_thousand_repeated_shuffled_concurrent_events_pay_each_order_exactly_once(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, localstripe: LocalStripe, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(20240611)
    intents = _stress_seed(fresh_db)
    intent_ids = sorted(intents)

    # Each order: its succeeded event; 700 processing / payment_failed events spread over them.
    events = [intent_event("payment_intent.succeeded", pi) for pi in intent_ids]
    while len(events) < STRESS_EVENTS:
        kind = rng.choice(["payment_intent.processing", "payment_intent.payment_failed"])
        events.append(intent_event(kind, rng.choice(intent_ids)))
    repeated = rng.sample(events, int(STRESS_EVENTS * REPEATED_SHARE))
    deliveries = events + repeated + repeated  # 20 % of the events arrive three times
    rng.shuffle(deliveries)
    seeded_in = time.monotonic() - started

    log_path = tmp_path / "uvicorn.log"
    local = threading.local()

    def send(event: dict[str, Any]) -> tuple[str, int, str]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        body, headers = signed(event)  # signed when sent, as Stripe does for each attempt
        try:
            response = local.client.post(WEBHOOK, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return event["id"], 0, repr(exc)
        outcome = response.json().get("outcome", response.text) if response.is_success else ""
        return event["id"], response.status_code, outcome or response.text

    watcher = Watcher(fresh_db)
    with live_server(fresh_db, jwt_issuer, localstripe, log_path) as base:
        watcher.start()
        fired = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(send, deliveries))
        sent_in = time.monotonic() - fired
        watcher.stop.set()
        watcher.join(timeout=30)

    statuses = Counter(status for _, status, _ in results)
    assert statuses == {200: len(deliveries)}, (statuses, log_path.read_text()[-5000:])
    outcomes = Counter(
        "duplicate" if outcome.startswith("duplicate") else outcome for _, _, outcome in results
    )
    # Every distinct event was applied by exactly one delivery; all the others were duplicates.
    assert outcomes["duplicate"] == len(deliveries) - STRESS_EVENTS
    assert outcomes["order paid"] == STRESS_ORDERS
    assert watcher.samples >= 3
    assert watcher.backwards == []

    engine = make_engine(fresh_db.owner_url, pool_size=1)
    try:
        with Session(engine) as session:
            stored = dict(session.execute(select(StripeEvent.id, StripeEvent.type)).all())
            assert stored == {e["id"]: e["type"] for e in events}
            paid_events = session.scalars(
                select(StripeEvent.outcome).where(StripeEvent.type == "payment_intent.succeeded")
            ).all()
            assert Counter(paid_events) == {"order paid": STRESS_ORDERS}

            order_status = dict(session.execute(select(Order.id, Order.status)).all())
            assert order_status == dict.fromkeys(intents.values(), "paid")
            payment_status = dict(
                session.execute(select(Payment.stripe_payment_intent_id, Payment.status)).all()
            )
            assert payment_status == dict.fromkeys(intent_ids, "succeeded")
            paid_audit = Counter(
                session.scalars(
                    select(AuditEntry.entity_id).where(AuditEntry.action == "order.paid")
                ).all()
            )
            assert paid_audit == {str(order_id): 1 for order_id in intents.values()}
            # No refunds; each order paid once gets exactly one "payment received" e-mail.
            queued = Counter(session.scalars(select(OutboxMessage.topic)).all())
            assert queued[REFUND_TOPIC] == 0
            receipts = session.scalars(
                select(OutboxMessage.dedupe_key).where(
                    OutboxMessage.dedupe_key.like("%payment-received-%")
                )
            ).all()
            assert len(receipts) == len(set(receipts)) == len(intents)
            seal(session)
            assert verify_chain(session).ok
    finally:
        engine.dispose()

    elapsed = time.monotonic() - started
    print(
        f"\nstress: {len(deliveries)} deliveries of {STRESS_EVENTS} events for {STRESS_ORDERS}"
        f" orders in {sent_in:.1f}s ({len(deliveries) / sent_in:.0f}/s, {CONCURRENCY} at a time);"
        f" seeding {seeded_in:.1f}s, total {elapsed:.1f}s, {watcher.samples} status samples"
    )
    assert elapsed < 90
