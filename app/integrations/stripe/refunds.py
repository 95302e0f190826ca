"""Refunds are queued in the outbox with the state change that needs them, then sent to Stripe
by the outbox worker (never while an order row is locked)."""

from __future__ import annotations

import uuid
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.integrations.stripe.client import stripe_client
from app.models import Payment
from app.models.status import PaymentStatus
from app.outbox import service as outbox
from app.outbox.service import Claimed, PermanentFailure

REFUND_TOPIC = "stripe.refund"


def enqueue_refund(session: Session, payment: Payment) -> None:
    outbox.enqueue(
        session,
        REFUND_TOPIC,
        f"refund-{payment.id}",
        {"payment_id": str(payment.id), "payment_intent_id": payment.stripe_payment_intent_id},
    )


def refund_paid_order(session: Session, order_id: uuid.UUID) -> int:
    """Queue a refund of every succeeded payment of a cancelled order, except those Stripe has
    already refunded in full (a refund made at Stripe); returns how many payments are refunded,
    queued now or already."""
    payments = list(
        session.scalars(
            select(Payment).where(
                Payment.order_id == order_id, Payment.status == PaymentStatus.SUCCEEDED
            )
        )
    )
    for payment in payments:
        if payment.refunded_cents < payment.amount_cents:
            enqueue_refund(session, payment)
    return len(payments)


def send_refund(message: Claimed) -> dict[str, Any] | None:
    """Refund the message's payment through Stripe; the idempotency key makes a repeat harmless.

    Returns Stripe's answer (id, amount, currency, status), or None when Stripe says the
    payment was already refunded; any other refusal is permanent.
    """
    try:
        sent = stripe_client().v1.refunds.create(
            params={"payment_intent": message.payload["payment_intent_id"]},
            options={"idempotency_key": f"portal-{message.dedupe_key}"},
        )
    except stripe.InvalidRequestError as exc:
        if "already been refunded" not in str(exc) and "already refunded" not in str(exc):
            raise PermanentFailure(str(exc)) from exc
        return None
    return {"id": sent.id, "amount": sent.amount, "currency": sent.currency, "status": sent.status}
