"""Reconciliation against the local Stripe stand-in (real HTTP), in the test's transaction: a
payment or a refund whose webhook never came is found and repaired through the webhook's own
path, once; what cannot be repaired (amounts, unknown intents, a payment Stripe never took) is
recorded and left for staff; a second run changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.integrations.stripe import listing
from app.models import (
    Alert,
    AuditEntry,
    OutboxMessage,
    Patient,
    Payment,
    PaymentRefund,
    StripeEvent,
)
from app.payments.reconciliation import ReconciliationReport, reconcile
from app.payments.reconciliation_service import repair_event_id
from tests.fixtures.orders import get_order, lot_counters
from tests.fixtures.patients import Headers, Json
from tests.fixtures.payments import create_intent, deliver, order_status, payment_of
from tests.fixtures.reconciliation import Period, exceptions, kinds, next_whole_second
from tests.fixtures.stripe import LocalStripe, stripe_event

FINANCE = Actor.system("reconciliation-test")


def run(db: Session, period: Period) -> ReconciliationReport:
    """A reconciliation of the period, committed as its callers do."""
    report = reconcile(db, FINANCE, start=period.start, end=period.end)
    db.commit()
    return report


def lot_of(order: Json) -> str:
    (item,) = order["items"]
    (allocation,) = item["allocations"]
    return str(allocation["lot_id"])


def count(db: Session, model: Any) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_a_payment_whose_webhook_never_came_is_repaired_once_through_the_webhook_path(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    period = Period(next_whole_second())
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    localstripe.pay_by_card(intent_id)  # its webhook goes nowhere: no endpoint for this test
    assert order_status(db, order["id"]) == "pending"
    assert lot_counters(db, lot_of(order)) == (100, 2)

    report = run(db, period)

    assert (report.counts, report.new, report.repaired) == ({"missed_payment": 1}, 1, 1)
    assert report.intents_examined == 1
    assert report.disputes_listed is False  # the stand-in has no disputes (404), said so
    assert order_status(db, order["id"]) == "paid"
    assert payment_of(db, intent_id).status == "succeeded"
    (row,) = exceptions(db)
    assert (row.kind, row.stripe_object_id, row.payment_intent_id) == (
        "missed_payment",
        intent_id,
        intent_id,
    )
    assert (row.expected_cents, row.actual_cents) == (order["total_cents"], order["total_cents"])
    assert row.repaired_at is not None and row.resolved_at is None
    event_id = repair_event_id("payment_intent.succeeded", intent_id, "succeeded")
    assert row.repair_event_id == event_id
    inbox = db.get(StripeEvent, event_id)
    assert inbox is not None and inbox.outcome == "order paid"
    # As a webhook would: paid by the webhook's actor, the patient e-mailed, stock still held.
    paid = db.scalars(
        select(AuditEntry).where(
            AuditEntry.entity_id == order["id"], AuditEntry.action == "order.paid"
        )
    ).all()
    assert [a.actor_subject for a in paid] == ["system:stripe-webhook"]
    repaired = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "payment.reconciliation_repaired")
    ).all()
    assert [(a.actor_subject, a.entity_id) for a in repaired] == [(FINANCE.subject, order["id"])]
    assert lot_counters(db, lot_of(order)) == (100, 2)
    messages = count(db, OutboxMessage)

    # The real webhook, arriving late, is harmless; so is a second run.
    (real,) = localstripe.events(intent_id, "payment_intent.succeeded")
    assert deliver(client, real)["outcome"] == "ignored: payment already succeeded"
    again = run(db, period)
    assert (again.counts, again.new, again.repaired) == ({}, 0, 0)
    assert count(db, OutboxMessage) == messages
    assert get_order(client, doctor, order["id"])["status"] == "paid"
    assert [r.repaired_at for r in exceptions(db)] == [row.repaired_at]


def test_a_refund_made_at_stripe_without_its_event_is_recorded_and_cancels_the_order(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    period = Period(next_whole_second())
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    localstripe.pay_by_card(intent_id)
    (succeeded,) = localstripe.events(intent_id, "payment_intent.succeeded")
    assert deliver(client, succeeded)["outcome"] == "order paid"
    refund = localstripe.post("/v1/refunds", {"payment_intent": intent_id})  # the Dashboard

    report = run(db, period)

    assert (report.counts, report.repaired) == ({"missed_refund": 1}, 1)
    assert kinds(db) == [("missed_refund", refund["id"])]
    recorded = db.get(PaymentRefund, refund["id"])
    assert recorded is not None and recorded.amount_cents == order["total_cents"]
    assert payment_of(db, intent_id).refunded_cents == order["total_cents"]
    assert order_status(db, order["id"]) == "cancelled"
    assert lot_counters(db, lot_of(order)) == (100, 0)
    # No refund of the portal's own is queued: Stripe's was recorded.
    refunds = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == "stripe.refund"))
    assert list(refunds) == []
    # Stripe's own events for that refund, late, change nothing; nor does a second run.
    charge = localstripe.intent(intent_id)["latest_charge"]
    late = stripe_event("charge.refunded", charge)
    assert deliver(client, late)["outcome"].startswith("refund recorded")
    again = run(db, period)
    assert (again.counts, again.new, again.repaired) == ({}, 0, 0)
    assert payment_of(db, intent_id).refunded_cents == order["total_cents"]


def test_an_amount_stripe_changed_is_recorded_and_not_repaired(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    period = Period(next_whole_second())
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    localstripe.post(f"/v1/payment_intents/{intent_id}", {"amount": "1000"})  # not the total
    localstripe.pay_by_card(intent_id)

    report = run(db, period)

    assert (report.counts, report.repaired) == ({"amount_differs": 1, "missed_payment": 1}, 0)
    rows = {row.kind: row for row in exceptions(db)}
    assert (rows["amount_differs"].expected_cents, rows["amount_differs"].actual_cents) == (
        order["total_cents"],
        1000,
    )
    assert rows["missed_payment"].details["not_repaired"] == "amount or currency differs"
    assert all(row.repaired_at is None for row in rows.values())
    assert order_status(db, order["id"]) == "pending"
    assert payment_of(db, intent_id).status == "requires_payment_method"
    assert report.open == 2
    assert report.alerts == {"opened": 2, "cleared": 0, "still_open": 0}
    alerts = db.scalars(select(Alert).where(Alert.topic == "reconciliation")).all()
    assert sorted(a.key for a in alerts) == sorted(f"reconciliation:{r.id}" for r in rows.values())
    by_key = {a.key: a for a in alerts}
    differs = by_key[f"reconciliation:{rows['amount_differs'].id}"]
    assert differs.summary == (
        f"Payment reconciliation: amount differs from Stripe's ({intent_id};"
        f" here {order['total_cents'] / 100:.2f} USD, Stripe 10.00 USD)"
    )
    patient = db.get(Patient, uuid.UUID(order["patient_id"]))
    assert patient is not None
    for alert in alerts:  # ids, amounts and kinds; nothing about the patient
        text = alert.summary + str(alert.details)
        assert str(patient.id) not in text and "@" not in text
    # Seen again: the same two rows, nothing new.
    again = run(db, period)
    assert (again.new, again.repaired, again.open) == (0, 0, 2)
    assert again.alerts == {"opened": 0, "cleared": 0, "still_open": 2}
    assert {r.id for r in exceptions(db)} == {r.id for r in rows.values()}


def test_an_intent_for_an_order_the_portal_does_not_know_is_recorded(
    db: Session, localstripe: LocalStripe
) -> None:
    period = Period(next_whole_second())
    stranger = str(uuid.uuid4())
    method = localstripe.post("/v1/payment_methods", {"type": "card", **CARD_FIELDS})
    intent = localstripe.post(
        "/v1/payment_intents",
        {
            "amount": "4200",
            "currency": "usd",
            "metadata[order_id]": stranger,
            "payment_method": method["id"],
            "confirm": "true",
        },
    )
    # An intent that is not the portal's (no order id) is none of its business.
    localstripe.post(
        "/v1/payment_intents",
        {"amount": "999", "currency": "usd", "payment_method": method["id"], "confirm": "true"},
    )

    report = run(db, period)

    assert report.counts == {"unknown_intent": 1}
    (row,) = exceptions(db)
    assert (row.kind, row.stripe_object_id, row.actual_cents) == (
        "unknown_intent",
        intent["id"],
        4200,
    )
    assert row.details == {
        "stripe_status": "succeeded",
        "metadata_order_id": stranger,
        "order_known": False,
    }
    assert (row.order_id, row.payment_id, row.repaired_at) == (None, None, None)


def test_a_payment_succeeded_here_that_stripe_never_took_is_recorded(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    period = Period(next_whole_second())
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    payment = payment_of(db, intent_id)
    payment.status = "succeeded"  # what a forged or misapplied event would have left
    db.flush()

    report = run(db, period)

    assert report.counts == {"not_paid_at_stripe": 1}
    (row,) = exceptions(db)
    assert row.details == {"stripe_status": "requires_payment_method", "portal_status": "succeeded"}
    assert db.get(Payment, payment.id) is not None


CARD_FIELDS = {
    "card[number]": "4242424242424242",
    "card[exp_month]": "12",
    "card[exp_year]": "2030",
    "card[cvc]": "123",
}


def test_every_page_of_stripe_s_list_is_read(
    db: Session, localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "PAGE", 3)  # 3 per page: several pages for 7 intents
    period = Period(next_whole_second())
    method = localstripe.post("/v1/payment_methods", {"type": "card", **CARD_FIELDS})
    created = {
        localstripe.post(
            "/v1/payment_intents",
            {
                "amount": str(500 + n),
                "currency": "usd",
                "metadata[order_id]": str(uuid.uuid4()),
                "payment_method": method["id"],
                "confirm": "true",
            },
        )["id"]
        for n in range(7)
    }

    report = run(db, period)

    assert (report.intents_examined, report.counts) == (7, {"unknown_intent": 7})
    assert {row.stripe_object_id for row in exceptions(db)} == created


def test_a_payment_of_the_period_whose_intent_stripe_created_earlier_is_still_compared(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    """Stripe stamps the intent a moment before the portal writes its payment: at a period's
    edge the list misses it, so the payment's intent is fetched by id."""
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    localstripe.pay_by_card(intent_id)
    period = Period(next_whole_second())
    payment = payment_of(db, intent_id)
    payment.created_at = period.start + timedelta(milliseconds=1)
    db.flush()

    report = run(db, period)

    assert (report.intents_examined, report.counts, report.repaired) == (
        1,
        {"missed_payment": 1},
        1,
    )
    assert order_status(db, order["id"]) == "paid"
