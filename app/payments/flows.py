"""What a Stripe event does, applied once: to the payment's rows and, through the order flows,
to its order. Also the worker's refund delivery and what it records.

Every path locks the payment, then its order (see `app.locks`); no lock is held while Stripe is
called.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor
from app.audit import service as audit
from app.integrations.stripe import refunds
from app.integrations.stripe.inbox import stored_payload
from app.models import Order, Payment, PaymentRefund, StripeEvent
from app.models.base import utcnow
from app.models.status import OrderStatus, PaymentStatus
from app.orders import flows as order_flows
from app.outbox.service import Claimed, OnDelivered
from app.payments import service


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
    return locks.payment_by_intent(session, payment_intent_id)


def _locked_order(session: Session, payment: Payment) -> Order:
    """The payment's order, locked after the payment (the order every payment path locks in)."""
    order = locks.order(session, payment.order_id)
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
                service.record_refund(session, system, payment, refund)
        amount_refunded = obj.get("amount_refunded")
        at_least = amount_refunded if isinstance(amount_refunded, int) else 0
        return settle_refunds(session, system, payment, order, at_least=at_least)
    if kind in service.REFUND_EVENTS:
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown refund"
        order = _locked_order(session, payment)
        changed = service.record_refund(session, system, payment, obj)
        if changed is not None and changed[1] in service.FAILED_REFUNDS:
            return refund_failed(session, system, payment, order, obj, was=changed[0])
        return settle_refunds(session, system, payment, order)
    if kind == "charge.dispute.created":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        if payment.disputed:
            return "dispute already recorded"
        _locked_order(session, payment)  # serialised with a fulfilment of the order
        closed = _closed_earlier(session, event["id"], obj.get("id"))
        if closed in service.DISPUTE_KEPT_THE_MONEY:  # its close arrived first: nothing is open
            return f"dispute already closed: {closed}"
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
    if kind == "charge.dispute.closed":
        payment = _locked_payment(session, obj.get("payment_intent"))
        if payment is None:
            return "ignored: unknown charge"
        _locked_order(session, payment)
        return _close_dispute(session, system, payment, event["id"], obj)
    return f"ignored: {kind}"


def _closed_earlier(session: Session, event_id: str, dispute_id: object) -> str | None:
    """How the dispute ended, when its `charge.dispute.closed` reached the inbox before this
    event (Stripe does not promise the order of delivery)."""
    if not isinstance(dispute_id, str):
        return None
    payload = StripeEvent.payload["data"]["object"]
    status = session.scalar(
        select(payload["status"].astext)
        .where(
            StripeEvent.type == "charge.dispute.closed",
            StripeEvent.id != event_id,
            payload["id"].astext == dispute_id,
        )
        .limit(1)
    )
    return status


def _close_dispute(
    session: Session, actor: Actor, payment: Payment, event_id: str, dispute: dict[str, Any]
) -> str:
    """A won dispute (or a closed inquiry) makes the order shippable again; a lost one keeps it
    unshippable and is recorded with the amount the bank took back."""
    status = dispute.get("status")
    if status not in (*service.DISPUTE_KEPT_THE_MONEY, service.DISPUTE_LOST):
        return f"ignored: dispute closed as {status!r}"
    if _closed_earlier(session, event_id, dispute.get("id")) is not None:
        return "dispute already closed"  # its webhook and a reconciliation's repair, say
    lost = status == service.DISPUTE_LOST
    amount = dispute.get("amount")
    before = {"disputed": payment.disputed}
    payment.disputed = lost
    payment.updated_at = utcnow()
    audit.record(
        session,
        actor,
        "payment.dispute_lost" if lost else "payment.dispute_won",
        "order",
        payment.order_id,
        before=before,
        after={
            "disputed": lost,
            "payment_intent_id": payment.stripe_payment_intent_id,
            "dispute_status": status,
            "amount_cents": amount if isinstance(amount, int) else None,
        },
    )
    if lost:
        return "dispute lost: recorded; the order stays unshippable"
    return f"dispute closed ({status}): the order can ship again"


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
            PaymentRefund.status.in_(service.COUNTED_REFUNDS),
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
        if order.status == OrderStatus.PAID and not service.keeps_money(session, order.id):
            order_flows.cancel_refunded_at_stripe(session, actor, order)
            outcome += "; order cancelled"
        elif order.status == OrderStatus.FULFILLED:
            payment.refunded_after_fulfilment = True
            after["refunded_after_fulfilment"] = True
            outcome += "; order already fulfilled: flagged"
    audit.record(session, actor, "payment.refunded", "order", order.id, before=before, after=after)
    return outcome


def refund_failed(
    session: Session,
    actor: Actor,
    payment: Payment,
    order: Order,
    refund: dict[str, Any],
    *,
    was: str | None,
) -> str:
    """A refund failed (or was cancelled) at Stripe: the money did not go back. Counted while
    it was on its way, it leaves `refunded_cents` (never below the refunds still counted), so a
    payment refunded "in full" shows what is still owed; audited for staff, who follow it up
    (the order is not un-cancelled: its stock went back already)."""
    amount = int(refund.get("amount") or 0)
    before = payment.refunded_cents
    if was in service.COUNTED_REFUNDS:
        counted = session.scalar(
            select(func.coalesce(func.sum(PaymentRefund.amount_cents), 0)).where(
                PaymentRefund.payment_id == payment.id,
                PaymentRefund.status.in_(service.COUNTED_REFUNDS),
            )
        )
        payment.refunded_cents = min(before, max(int(counted or 0), before - amount))
        payment.updated_at = utcnow()
    reason = refund.get("failure_reason")
    audit.record(
        session,
        actor,
        "payment.refund_failed",
        "order",
        order.id,
        before={"refunded_cents": before},
        after={
            "payment_intent_id": payment.stripe_payment_intent_id,
            "refund_id": refund.get("id"),
            "amount_cents": amount,
            "status": refund.get("status"),
            "failure_reason": reason if isinstance(reason, str) else None,
            "refunded_cents": payment.refunded_cents,
            "order_status": order.status,
        },
    )
    return (
        f"refund failed: {amount} cents not returned; {payment.refunded_cents} of "
        f"{payment.amount_cents} cents refunded"
    )


def record_refund_sent(
    session: Session, payment_id: uuid.UUID, refund: dict[str, Any] | None
) -> None:
    """The outbox worker sent a refund (`refund`: Stripe's answer, None when Stripe said it was
    already refunded): audit it and record it now, without waiting for Stripe's events."""
    worker = Actor.system("outbox-worker")
    payment = locks.payment(session, payment_id)
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
        service.record_refund(session, worker, payment, refund)
    # The portal's refund names no amount, so Stripe refunds whatever remained: once it is
    # accepted (or Stripe says nothing remained), the payment is refunded in full, even when
    # an earlier partial refund made at Stripe is known here only by the charge's total.
    if refund is None or refund.get("status") in service.COUNTED_REFUNDS:
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
        "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
        "payment_intent.processing": PaymentStatus.PROCESSING,
        "payment_intent.payment_failed": PaymentStatus.REQUIRES_PAYMENT_METHOD,
        "payment_intent.canceled": PaymentStatus.CANCELED,
        "payment_intent.requires_action": PaymentStatus.REQUIRES_ACTION,
    }.get(kind)
    if new_status is None:
        return f"ignored: {kind}"
    # A bank debit that fails after `processing` returns the intent to requires_payment_method.
    # Only a failure Stripe created after the processing was applied is that; an older one (a
    # declined card before the debit, delivered late) must not move the payment back.
    debit_failed = (
        new_status == PaymentStatus.REQUIRES_PAYMENT_METHOD
        and payment.status == PaymentStatus.PROCESSING
        and isinstance(created, int)
        and payment.updated_at is not None
        and created > payment.updated_at.timestamp()
    )
    if not debit_failed and (
        service.STATUS_RANK[new_status] < service.STATUS_RANK.get(payment.status, 0)
        or payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED)
    ):
        return f"ignored: payment already {payment.status}"
    before_status = payment.status
    payment.status = new_status
    payment.updated_at = utcnow()
    if new_status != before_status or new_status == PaymentStatus.REQUIRES_PAYMENT_METHOD:
        changed: dict[str, Any] = {
            "payment_intent_id": payment.stripe_payment_intent_id,
            "status": new_status,
        }
        if new_status == PaymentStatus.REQUIRES_PAYMENT_METHOD:
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
    if new_status == PaymentStatus.REQUIRES_PAYMENT_METHOD:
        error = intent.get("last_payment_error") or {}
        payment.failure_reason = str(error.get("message") or "the payment failed")[:500]
        return "payment failed; order stays pending"
    if new_status == PaymentStatus.PROCESSING:
        # Of the methods the portal offers (card, US bank account), only a bank debit reports
        # `processing`; the intent's own list names both, so it cannot tell which was used.
        payment.method = payment.method or "us_bank_account"
        return "payment processing (bank debit)"
    if new_status == PaymentStatus.SUCCEEDED:
        payment.succeeded_at = utcnow()
        settles = (payment.amount_cents, payment.currency) == (order.total_cents, order.currency)
        if order.status == OrderStatus.PENDING and settles:
            order_flows.mark_paid(session, system, order)
            return "order paid"
        if order.status == OrderStatus.PENDING:
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


def deliver_refund(message: Claimed) -> OnDelivered:
    """Outbox handler: send the refund to Stripe (no transaction open), then return what the
    worker records with the delivery: the audit row and the refund itself."""
    payment_id = uuid.UUID(message.payload["payment_id"])
    refund = refunds.send_refund(message)

    def record(session: Session) -> None:
        record_refund_sent(session, payment_id, refund)

    return record
