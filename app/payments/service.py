"""Payments: Stripe PaymentIntents for orders, the webhook inbox, refunds.

Nothing about a patient reaches Stripe: a PaymentIntent carries the amount and the order id.
No database row lock is held while Stripe is called.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.actor import Actor
from app.audit import service as audit
from app.checkout import service as checkout
from app.config import get_settings
from app.errors import Conflict, InvalidStateTransition, PortalError
from app.models import Order, Payment, StripeEvent
from app.models.base import utcnow
from app.notifications import flows
from app.orders import service as orders
from app.payments import refunds
from app.payments.stripe_gateway import stripe_client

# Stripe statuses that may still become a payment; the rank orders how far a payment has come,
# so a late or repeated event can never move it backwards.
STATUS_RANK = {
    "requires_payment_method": 0,
    "requires_confirmation": 0,
    "requires_action": 1,
    "processing": 2,
    "succeeded": 3,
    "canceled": 3,
}
REUSABLE = {"requires_payment_method", "requires_confirmation", "requires_action"}


class InvalidWebhook(PortalError):
    status = 400
    slug = "invalid-webhook-signature"
    title = "The webhook signature is not valid"


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
    if order.status != "pending":
        raise InvalidStateTransition(
            f"an order that is {order.status} cannot be paid", current_status=order.status
        )
    payments = list(
        session.scalars(
            select(Payment).where(Payment.order_id == order.id).order_by(Payment.created_at.desc())
        )
    )
    if any(p.status in ("processing", "succeeded") for p in payments):
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


def verify_webhook(payload: bytes, signature: str | None) -> dict[str, Any]:
    settings = get_settings()
    if not signature:
        raise InvalidWebhook("the Stripe-Signature header is missing")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            settings.stripe_webhook_secret,
            settings.stripe_webhook_tolerance_seconds,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    try:
        event: dict[str, Any] = json.loads(payload)
    except ValueError as exc:
        raise InvalidWebhook("the webhook body is not JSON") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise InvalidWebhook("the webhook body is not a Stripe event")
    return event


def receive_event(session: Session, event: dict[str, Any]) -> str:
    """Store the event in the inbox once, then apply it. A repeated event id does nothing."""
    stored = session.execute(
        insert(StripeEvent)
        .values(id=event["id"], type=event["type"], payload=event)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)
    ).scalar()
    if stored is None:
        return "duplicate: already received"
    outcome = apply_event(session, event)
    inbox = session.get(StripeEvent, event["id"])
    assert inbox is not None
    inbox.outcome = outcome[:200]
    return outcome


def _locked_payment(session: Session, payment_intent_id: object) -> Payment | None:
    return session.scalar(
        select(Payment)
        .where(Payment.stripe_payment_intent_id == payment_intent_id)
        .with_for_update()
    )


def apply_event(session: Session, event: dict[str, Any]) -> str:
    kind = event["type"]
    obj: dict[str, Any] = event.get("data", {}).get("object", {})
    system = Actor.system("stripe-webhook")
    if kind.startswith("payment_intent."):
        payment = _locked_payment(session, obj.get("id"))
        if payment is None:
            return f"ignored: unknown payment intent {obj.get('id')}"
        order = session.get(Order, payment.order_id, with_for_update=True)
        assert order is not None
        return _apply_intent_event(
            session, system, kind, obj, payment, order, created=event.get("created")
        )
    if kind == "charge.refunded":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        refunded = int(obj.get("amount_refunded") or 0)
        payment.refunded_cents = max(payment.refunded_cents, min(refunded, payment.amount_cents))
        payment.updated_at = utcnow()
        return f"refunded {payment.refunded_cents} cents"
    if kind == "charge.dispute.created":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        payment.disputed = True
        payment.updated_at = utcnow()
        audit.record(session, system, "payment.disputed", "order", payment.order_id)
        return "dispute recorded"
    return f"ignored: {kind}"


def _apply_intent_event(
    session: Session,
    system: Actor,
    kind: str,
    intent: dict[str, Any],
    payment: Payment,
    order: Order,
    *,
    created: Any = None,
) -> str:
    new_status = {
        "payment_intent.succeeded": "succeeded",
        "payment_intent.processing": "processing",
        "payment_intent.payment_failed": "requires_payment_method",
        "payment_intent.canceled": "canceled",
        "payment_intent.requires_action": "requires_action",
    }.get(kind)
    if new_status is None:
        return f"ignored: {kind}"
    # A bank debit that fails after `processing` returns the intent to requires_payment_method.
    # Only a failure Stripe created after the processing was applied is that; an older one (a
    # declined card before the debit, delivered late) must not move the payment back.
    debit_failed = (
        new_status == "requires_payment_method"
        and payment.status == "processing"
        and isinstance(created, int)
        and payment.updated_at is not None
        and created > payment.updated_at.timestamp()
    )
    if not debit_failed and (
        STATUS_RANK[new_status] < STATUS_RANK.get(payment.status, 0)
        or payment.status in ("succeeded", "canceled")
    ):
        return f"ignored: payment already {payment.status}"
    payment.status = new_status
    payment.updated_at = utcnow()
    types = intent.get("payment_method_types") or []
    if intent.get("payment_method") and types:
        payment.method = types[0] if len(types) == 1 else payment.method
    if new_status == "requires_payment_method":
        error = intent.get("last_payment_error") or {}
        payment.failure_reason = str(error.get("message") or "the payment failed")[:500]
        return "payment failed; order stays pending"
    if new_status == "processing":
        return "payment processing (bank debit)"
    if new_status == "succeeded":
        payment.succeeded_at = utcnow()
        settles = (payment.amount_cents, payment.currency) == (order.total_cents, order.currency)
        if order.status == "pending" and settles:
            orders.mark_paid(session, system, order.id)
            status_link = checkout.issue_link(session, system, order, email=False)
            flows.payment_received(session, order, checkout.checkout_url(status_link))
            return "order paid"
        if order.status == "pending":
            # An intent for an earlier total (the order was edited after it was created, and
            # an open checkout page still held it): it does not settle the order.
            refunds.enqueue_refund(session, payment)
            return (
                f"refund queued: paid {payment.amount_cents} {payment.currency}, order total is"
                f" {order.total_cents} {order.currency}"
            )
        # The order was cancelled (expired) while the patient paid: give the money back.
        refunds.enqueue_refund(session, payment)
        return f"refund queued: order is {order.status}"
    return f"payment {new_status}"
