"""Payments: the payment rows of an order, its Stripe PaymentIntents, and refunds recorded.

Nothing about a patient reaches Stripe: a PaymentIntent carries the amount and the order id.
No database row lock is held while Stripe is called. What a Stripe event does to an order is
in `app.payments.flows`.
"""

from __future__ import annotations

import uuid
from typing import Any

import stripe
from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.actor import Actor
from app.audit import service as audit
from app.errors import Conflict, PortalError
from app.integrations.stripe.client import stripe_client
from app.models import Order, Payment, PaymentRefund
from app.models.base import utcnow
from app.models.status import PaymentStatus, RefundStatus
from app.orders import state

# Stripe statuses that may still become a payment; the rank orders how far a payment has come,
# so a late or repeated event can never move it backwards.
STATUS_RANK: dict[str, int] = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD: 0,
    PaymentStatus.REQUIRES_CONFIRMATION: 0,
    PaymentStatus.REQUIRES_ACTION: 1,
    PaymentStatus.PROCESSING: 2,
    PaymentStatus.SUCCEEDED: 3,
    PaymentStatus.CANCELED: 3,
}
REUSABLE = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD,
    PaymentStatus.REQUIRES_CONFIRMATION,
    PaymentStatus.REQUIRES_ACTION,
}
# A refund's status only moves forward: it can fail after it succeeded, never the other way.
REFUND_RANK: dict[str, int] = {
    RefundStatus.PENDING: 0,
    RefundStatus.REQUIRES_ACTION: 0,
    RefundStatus.SUCCEEDED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.CANCELED: 2,
}
# Refunds that give money back (or are on their way): they count towards `refunded_cents`.
COUNTED_REFUNDS = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED)
# Refunds that did not give the money back.
FAILED_REFUNDS = (RefundStatus.FAILED, RefundStatus.CANCELED)
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
# How a closed dispute ended (Stripe's `dispute.status`): the clinic kept the money (won, or an
# inquiry closed without a chargeback), or the card holder's bank took it back (lost).
DISPUTE_KEPT_THE_MONEY = ("won", "warning_closed")
DISPUTE_LOST = "lost"


class PaymentProviderUnavailable(PortalError):
    status = 502
    slug = "payment-provider-unavailable"
    title = "The payment provider could not be reached"


def idempotency_key(order: Order) -> str:
    return f"portal-order-{order.id}-{order.total_cents}-{order.currency}"


def create_or_reuse_intent(session: Session, actor: Actor, order: Order) -> tuple[str, str]:
    """The PaymentIntent for the order's current total: `(id, client_secret)`.

    Reuses the order's open intent for the same amount; otherwise creates one with an
    idempotency key derived from the order id and amount. The amount always comes from the order.
    """
    state.ensure_payable(order)
    payments = list(
        session.scalars(
            select(Payment).where(Payment.order_id == order.id).order_by(Payment.created_at.desc())
        )
    )
    if any(p.status in (PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED) for p in payments):
        raise Conflict("a payment for this order is already in progress or complete")
    client = stripe_client()
    try:
        for payment in payments:
            if payment.status in REUSABLE and payment.amount_cents == order.total_cents:
                intent = client.v1.payment_intents.retrieve(payment.stripe_payment_intent_id)
                return intent.id, str(intent.client_secret)
        intent = client.v1.payment_intents.create(
            params={
                "amount": order.total_cents,
                "currency": order.currency,
                # Payment methods (card, US bank account) are enabled in the Stripe Dashboard.
                "metadata": {"order_id": str(order.id)},
            },
            options={"idempotency_key": idempotency_key(order)},
        )
    except stripe.StripeError as exc:
        raise PaymentProviderUnavailable(
            f"Stripe refused or failed: {exc.user_message or exc}"
        ) from exc
    session.execute(
        insert(Payment)
        .values(
            id=uuid.uuid4(),
            order_id=order.id,
            stripe_payment_intent_id=intent.id,
            status=intent.status,
            amount_cents=order.total_cents,
            currency=order.currency,
        )
        .on_conflict_do_nothing(index_elements=["stripe_payment_intent_id"])
    )
    audit.record(
        session,
        actor,
        "payment.intent_created",
        "order",
        order.id,
        after={"payment_intent_id": intent.id, "amount_cents": order.total_cents},
    )
    return intent.id, str(intent.client_secret)


def record_refund(
    session: Session, actor: Actor, payment: Payment, refund: dict[str, Any]
) -> tuple[str | None, str] | None:
    """Record one Stripe refund of the (locked) payment, once per refund id and status.

    Its events come in any order and repeat; a status only moves forward (`REFUND_RANK`).
    Returns the refund's status before and after when it changed (before: None for a refund
    new here), else None.
    """
    refund_id, amount, status = refund.get("id"), refund.get("amount"), refund.get("status")
    if not (isinstance(refund_id, str) and isinstance(amount, int) and isinstance(status, str)):
        return None
    if amount <= 0:
        return None
    row = session.get(PaymentRefund, refund_id)
    before = None if row is None else {"status": row.status}
    if row is None:
        currency = refund.get("currency")
        row = PaymentRefund(
            stripe_refund_id=refund_id,
            payment_id=payment.id,
            amount_cents=amount,
            currency=currency if isinstance(currency, str) else payment.currency,
            status=status,
        )
        session.add(row)
    elif REFUND_RANK.get(status, 0) > REFUND_RANK.get(row.status, 0):
        row.status = status
        row.updated_at = utcnow()
    else:
        return None
    audit.record(
        session,
        actor,
        "payment.refund_recorded",
        "order",
        payment.order_id,
        before=before,
        after={
            "payment_intent_id": payment.stripe_payment_intent_id,
            "refund_id": refund_id,
            "amount_cents": row.amount_cents,
            "status": status,
        },
    )
    return (None if before is None else before["status"], status)


def keeps_money(session: Session, order_id: uuid.UUID) -> bool:
    """Whether any succeeded payment of the order is not refunded in full."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Payment.order_id == order_id,
                    Payment.status == PaymentStatus.SUCCEEDED,
                    Payment.refunded_cents < Payment.amount_cents,
                )
            )
        )
    )
