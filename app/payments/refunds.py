"""Refunds are queued in the outbox with the state change that needs them, then sent to Stripe
by the outbox worker (never while an order row is locked)."""

from __future__ import annotations

import uuid

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Payment
from app.outbox import service as outbox
from app.outbox.service import Claimed, PermanentFailure
from app.payments.stripe_gateway import stripe_client

REFUND_TOPIC = "stripe.refund"


def enqueue_refund(session: Session, payment: Payment) -> None:
    outbox.enqueue(
        session,
        REFUND_TOPIC,
        f"refund-{payment.id}",
        {"payment_id": str(payment.id), "payment_intent_id": payment.stripe_payment_intent_id},
    )


def refund_paid_order(session: Session, order_id: uuid.UUID) -> int:
    """Queue a refund of every succeeded payment of a cancelled order; returns how many."""
    payments = list(
        session.scalars(
            select(Payment).where(Payment.order_id == order_id, Payment.status == "succeeded")
        )
    )
    for payment in payments:
        enqueue_refund(session, payment)
    return len(payments)


def deliver_refund(message: Claimed) -> None:
    """Outbox handler: refund through Stripe; the idempotency key makes a repeat harmless."""
    try:
        stripe_client().v1.refunds.create(
            params={"payment_intent": message.payload["payment_intent_id"]},
            options={"idempotency_key": f"portal-{message.dedupe_key}"},
        )
    except stripe.InvalidRequestError as exc:
        if "already been refunded" in str(exc) or "already refunded" in str(exc):
            return
        raise PermanentFailure(str(exc)) from exc
