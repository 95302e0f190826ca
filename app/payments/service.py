"""Payments: Stripe PaymentIntents for orders, the webhook inbox, refunds.

Nothing about a patient reaches Stripe: a PaymentIntent carries the amount and the order id.
No database row lock is held while Stripe is called.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import stripe
from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.actor import Actor
from app.audit import service as audit
from app.checkout import service as checkout
from app.config import get_settings
from app.errors import Conflict, InvalidStateTransition, PortalError
from app.models import Order, Payment, PaymentRefund, StripeEvent
from app.models.base import utcnow
from app.models.order import CancellationReason
from app.notifications import flows
from app.orders import service as orders
from app.payments import refunds
from app.payments.inbox import stored_payload
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
# A refund's status only moves forward: it can fail after it succeeded, never the other way.
REFUND_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}
# Refunds that give money back (or are on their way): they count towards `refunded_cents`.
COUNTED_REFUNDS = ("pending", "requires_action", "succeeded")
REFUND_EVENTS = ("refund.created", "refund.updated", "charge.refund.updated")


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
        .values(id=event["id"], type=event["type"], payload=stored_payload(event))
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
    if isinstance(payment_intent_id, dict):  # an expanded object
        payment_intent_id = payment_intent_id.get("id")
    if not isinstance(payment_intent_id, str):
        return None
    return session.scalar(
        select(Payment)
        .where(Payment.stripe_payment_intent_id == payment_intent_id)
        .with_for_update()
    )


def _locked_order(session: Session, payment: Payment) -> Order:
    """The payment's order, locked after the payment (the order every payment path locks in)."""
    order = session.get(Order, payment.order_id, with_for_update=True)
    assert order is not None
    return order


def apply_event(session: Session, event: dict[str, Any]) -> str:
    kind = event["type"]
    obj: dict[str, Any] = event.get("data", {}).get("object", {})
    system = Actor.system("stripe-webhook")
    if kind.startswith("payment_intent."):
        payment = _locked_payment(session, obj.get("id"))
        if payment is None:
            return f"ignored: unknown payment intent {obj.get('id')}"
        order = _locked_order(session, payment)
        return _apply_intent_event(
            session, system, kind, obj, payment, order, created=event.get("created")
        )
    if kind == "charge.refunded":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        order = _locked_order(session, payment)
        listed = obj.get("refunds")
        data = listed.get("data") if isinstance(listed, dict) else None
        for refund in data if isinstance(data, list) else []:
            if isinstance(refund, dict):
                record_refund(session, system, payment, refund)
        amount_refunded = obj.get("amount_refunded")
        at_least = amount_refunded if isinstance(amount_refunded, int) else 0
        return settle_refunds(session, system, payment, order, at_least=at_least)
    if kind in REFUND_EVENTS:
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown refund"
        order = _locked_order(session, payment)
        record_refund(session, system, payment, obj)
        return settle_refunds(session, system, payment, order)
    if kind == "charge.dispute.created":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        if payment.disputed:
            return "dispute already recorded"
        _locked_order(session, payment)  # serialised with a fulfilment of the order
        payment.disputed = True
        payment.updated_at = utcnow()
        reason = obj.get("reason")
        audit.record(
            session,
            system,
            "payment.disputed",
            "order",
            payment.order_id,
            before={"disputed": False},
            after={
                "disputed": True,
                "payment_intent_id": payment.stripe_payment_intent_id,
                "reason": reason if isinstance(reason, str) else None,
            },
        )
        return "dispute recorded"
    return f"ignored: {kind}"


def record_refund(session: Session, actor: Actor, payment: Payment, refund: dict[str, Any]) -> None:
    """Record one Stripe refund of the (locked) payment, once per refund id and status.

    Its events come in any order and repeat; a status only moves forward (`REFUND_RANK`).
    """
    refund_id, amount, status = refund.get("id"), refund.get("amount"), refund.get("status")
    if not (isinstance(refund_id, str) and isinstance(amount, int) and isinstance(status, str)):
        return
    if amount <= 0:
        return
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
        return
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


def _keeps_money(session: Session, order_id: uuid.UUID) -> bool:
    """Whether any succeeded payment of the order is not refunded in full."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Payment.order_id == order_id,
                    Payment.status == "succeeded",
                    Payment.refunded_cents < Payment.amount_cents,
                )
            )
        )
    )


def settle_refunds(
    session: Session, actor: Actor, payment: Payment, order: Order, *, at_least: int = 0
) -> str:
    """Bring the payment's `refunded_cents` up to what Stripe has refunded, and act on it.

    The amount is the larger of Stripe's `amount_refunded` for the charge (`at_least`) and the
    refunds recorded for it, each counted once; it never goes down, so late or repeated events
    change nothing. A full refund of a paid order cancels it (its stock is released, no refund
    of our own is queued); a full refund of a shipped order keeps it fulfilled and flags the
    payment; a partial refund is recorded only.
    """
    counted = session.scalar(
        select(func.coalesce(func.sum(PaymentRefund.amount_cents), 0)).where(
            PaymentRefund.payment_id == payment.id,
            PaymentRefund.status.in_(COUNTED_REFUNDS),
        )
    )
    refunded = min(payment.amount_cents, max(payment.refunded_cents, at_least, int(counted or 0)))
    if refunded == payment.refunded_cents:
        return f"refund recorded; {payment.refunded_cents} cents refunded"
    before = {"refunded_cents": payment.refunded_cents}
    payment.refunded_cents = refunded
    payment.updated_at = utcnow()
    after: dict[str, Any] = {
        "payment_intent_id": payment.stripe_payment_intent_id,
        "refunded_cents": refunded,
        "amount_cents": payment.amount_cents,
        "order_status": order.status,
    }
    outcome = f"refunded {refunded} cents"
    if refunded == payment.amount_cents:
        outcome += " in full"
        if order.status == "paid" and not _keeps_money(session, order.id):
            orders.cancel_order(session, actor, order.id, CancellationReason.REFUNDED_AT_STRIPE)
            outcome += "; order cancelled"
        elif order.status == "fulfilled":
            payment.refunded_after_fulfilment = True
            after["refunded_after_fulfilment"] = True
            outcome += "; order already fulfilled: flagged"
    audit.record(session, actor, "payment.refunded", "order", order.id, before=before, after=after)
    return outcome


def record_refund_sent(
    session: Session, payment_id: uuid.UUID, refund: dict[str, Any] | None
) -> None:
    """The outbox worker sent a refund (`refund`: Stripe's answer, None when Stripe said it was
    already refunded): audit it and record it now, without waiting for Stripe's events."""
    worker = Actor.system("outbox-worker")
    payment = session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment is None:
        return
    order = _locked_order(session, payment)
    after: dict[str, Any] = {"payment_intent_id": payment.stripe_payment_intent_id}
    if refund is None:
        after["result"] = "already refunded at Stripe"
    else:
        after |= {
            "refund_id": refund.get("id"),
            "amount_cents": refund.get("amount"),
            "status": refund.get("status"),
        }
    audit.record(
        session,
        worker,
        "payment.refund_sent",
        "order",
        payment.order_id,
        before={"refunded_cents": payment.refunded_cents},
        after=after,
    )
    if refund is not None:
        record_refund(session, worker, payment, refund)
    # The portal's refund names no amount, so Stripe refunds whatever remained: once it is
    # accepted (or Stripe says nothing remained), the payment is refunded in full, even when
    # an earlier partial refund made at Stripe is known here only by the charge's total.
    if refund is None or refund.get("status") in COUNTED_REFUNDS:
        settle_refunds(session, worker, payment, order, at_least=payment.amount_cents)


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
    before_status = payment.status
    payment.status = new_status
    payment.updated_at = utcnow()
    if new_status != before_status or new_status == "requires_payment_method":
        changed: dict[str, Any] = {
            "payment_intent_id": payment.stripe_payment_intent_id,
            "status": new_status,
        }
        if new_status == "requires_payment_method":
            code = (intent.get("last_payment_error") or {}).get("code")
            changed |= {"failed": True, "failure_code": code if isinstance(code, str) else None}
        audit.record(
            session,
            system,
            "payment.status_changed",
            "order",
            order.id,
            before={"status": before_status},
            after=changed,
        )
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
