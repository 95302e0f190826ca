"""An order's timeline: its milestones, oldest first, read from what already records them.

Every change to an order writes an audit row naming the order (`entity_type = 'order'`), in
the transaction of the change: creation and edits, payment links, payments and refunds, the
pharmacy's answers, fulfilment and cancellation. The timeline reads those rows (through the
`(entity_type, entity_id)` index) and turns each into a milestone in plain words; reads of the
order are not milestones. A payment link's e-mail is followed in the outbox, so the timeline
says whether it was delivered. Audit rows hold no PHI (it is redacted when they are written),
and the facts shown are chosen from them one by one, never copied wholesale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry, Order, OutboxMessage
from app.models.status import OrderEvent, OutboxStatus
from app.notifications.service import EMAIL_TOPIC
from app.orders.schemas import OrderTimeline, TimelineEntry

Fact = str | int | bool | None
Milestone = tuple[OrderEvent, str, dict[str, Fact]]

# Audit actions that record a read of the order, not a change to it.
READS = ("order.read", "order.listed")


def money(cents: Any, currency: str) -> str:
    if not isinstance(cents, int):
        return "an unknown amount"
    return f"{cents / 100:,.2f} {currency.upper()}"


def _fact(value: Any) -> Fact:
    return value if isinstance(value, str | int | bool) or value is None else str(value)


def _pick(after: Mapping[str, Any], *keys: str) -> dict[str, Fact]:
    return {key: _fact(after.get(key)) for key in keys if key in after}


PHARMACY_EVENTS: dict[str, tuple[OrderEvent, str]] = {
    "queued": (OrderEvent.PHARMACY_QUEUED, "Prescription queued for {pharmacy}"),
    "held": (OrderEvent.PHARMACY_HELD, "Prescription held: no pharmacy is configured"),
    "submitted": (OrderEvent.SUBMITTED_TO_PHARMACY, "Prescription submitted to {pharmacy}"),
    "accepted": (OrderEvent.PHARMACY_ACCEPTED, "{pharmacy} accepted the prescription"),
    "rejected": (OrderEvent.PHARMACY_REJECTED, "{pharmacy} rejected the prescription"),
    "dispensed": (OrderEvent.DISPENSED, "{pharmacy} dispensed the prescription"),
    "dead_lettered": (
        OrderEvent.PHARMACY_DEAD_LETTER,
        "Sending to {pharmacy} failed; waiting for an admin to re-send",
    ),
    "resent": (OrderEvent.PHARMACY_RESENT, "An admin re-sent the prescription"),
    "cancel_queued": (OrderEvent.PHARMACY_CANCEL_QUEUED, "Cancellation queued for {pharmacy}"),
    "cancel_refused": (
        OrderEvent.PHARMACY_CANCEL_REFUSED,
        "{pharmacy} refused to cancel the prescription",
    ),
    "cancelled": (OrderEvent.PHARMACY_CANCELLED, "{pharmacy} cancelled the prescription"),
}


def _pharmacy(event: str, after: Mapping[str, Any]) -> Milestone | None:
    known = PHARMACY_EVENTS.get(event)
    if known is None:
        return None
    kind, text = known
    name = after.get("pharmacy") if isinstance(after.get("pharmacy"), str) else "the pharmacy"
    return kind, text.format(pharmacy=name), _pick(after, "pharmacy", "status", "attempts")


def _link_email_key(after: Mapping[str, Any]) -> str:
    """The outbox key of a link's e-mail (`app.notifications.flows.checkout_link_issued`)."""
    return f"{EMAIL_TOPIC}:checkout-link-{after.get('link_id')}"


def _link_sent(after: Mapping[str, Any], emails: Mapping[str, OutboxMessage]) -> Milestone | None:
    # A link issued inside another message (the status page after payment or cancellation)
    # has no e-mail of its own: it is not a payment link sent to the patient.
    message = emails.get(_link_email_key(after))
    if message is None:
        return None
    delivery = {
        OutboxStatus.DELIVERED: "delivered",
        OutboxStatus.PENDING: "queued",
        OutboxStatus.DEAD: "not delivered",
    }.get(OutboxStatus(message.status), message.status)
    return (
        OrderEvent.LINK_SENT,
        f"Payment link e-mailed to the patient ({delivery})",
        {"email": delivery, "expires_at": _fact(after.get("expires_at"))},
    )


def _milestone(
    row: AuditEntry, currency: str, emails: Mapping[str, OutboxMessage]
) -> Milestone | None:
    """The milestone an audit row records, or None when it records none."""
    after: Mapping[str, Any] = row.after or {}
    action = row.action
    if action.startswith("order.pharmacy_"):
        return _pharmacy(action.removeprefix("order.pharmacy_"), after)
    simple: dict[str, Callable[[], Milestone | None]] = {
        "order.created": lambda: (
            OrderEvent.CREATED,
            f"Order created for {money(after.get('total_cents'), currency)}",
            _pick(after, "total_cents"),
        ),
        "order.edited": lambda: (
            OrderEvent.EDITED,
            f"Items changed; total now {money(after.get('total_cents'), currency)}",
            _pick(after, "total_cents"),
        ),
        "checkout_link.issued": lambda: _link_sent(after, emails),
        "checkout_link.verified": lambda: (
            OrderEvent.LINK_OPENED,
            "The patient opened the payment page (date of birth confirmed)",
            {},
        ),
        "checkout_link.dob_failed": lambda: (
            (OrderEvent.LINK_LOCKED, "Payment link locked after failed date-of-birth checks", {})
            if after.get("locked")
            else None
        ),
        "checkout_link.revoked": lambda: (
            (OrderEvent.LINK_REVOKED, "Payment links withdrawn", _pick(after, "links"))
            if after.get("links")
            else None
        ),
        "payment.intent_created": lambda: (
            OrderEvent.PAYMENT_STARTED,
            f"Payment started for {money(after.get('amount_cents'), currency)}",
            _pick(after, "amount_cents"),
        ),
        "payment.status_changed": lambda: _payment_status(after),
        "order.paid": lambda: (OrderEvent.PAID, "Paid", {}),
        "order.fulfilled": lambda: (OrderEvent.FULFILLED, "Fulfilled: the items left stock", {}),
        "order.cancelled": lambda: (
            OrderEvent.CANCELLED,
            f"Cancelled ({str(after.get('reason') or 'other').replace('_', ' ')})",
            _pick(after, "reason"),
        ),
        "payment.refund_sent": lambda: (
            OrderEvent.REFUND_REQUESTED,
            "Refund requested at Stripe",
            _pick(after, "status"),
        ),
        "payment.refund_recorded": lambda: (
            (
                OrderEvent.REFUND_FAILED,
                f"A refund of {money(after.get('amount_cents'), currency)} failed at Stripe",
                _pick(after, "amount_cents", "status"),
            )
            if after.get("status") in ("failed", "canceled")
            else None
        ),
        "payment.refunded": lambda: (
            OrderEvent.REFUNDED,
            f"Refunded {money(after.get('refunded_cents'), currency)}"
            f" of {money(after.get('amount_cents'), currency)}",
            _pick(after, "refunded_cents", "amount_cents"),
        ),
        "payment.disputed": lambda: (
            OrderEvent.DISPUTED,
            "The patient disputed the payment at their bank",
            _pick(after, "reason"),
        ),
        "payment.reconciliation_repaired": lambda: (
            OrderEvent.PAYMENT_REPAIRED,
            "Payment records repaired from Stripe's (reconciliation)",
            _pick(after, "kind"),
        ),
    }
    build = simple.get(action)
    return build() if build else None


def _payment_status(after: Mapping[str, Any]) -> Milestone | None:
    if after.get("failed"):
        return (
            OrderEvent.PAYMENT_FAILED,
            "A payment attempt failed",
            _pick(after, "failure_code"),
        )
    if after.get("status") == "processing":
        return (OrderEvent.PAYMENT_PROCESSING, "Bank payment processing", {})
    return None


def order_timeline(session: Session, order: Order) -> OrderTimeline:
    """The milestones of an order the caller may see (the caller checked), oldest first."""
    rows = list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity_type == "order",
                AuditEntry.entity_id == str(order.id),
                AuditEntry.action.not_in(READS),
            )
            .order_by(AuditEntry.id)
        )
    )
    link_keys = [
        _link_email_key(row.after or {}) for row in rows if row.action == "checkout_link.issued"
    ]
    emails = {
        message.dedupe_key: message
        for message in session.scalars(
            select(OutboxMessage).where(OutboxMessage.dedupe_key.in_(link_keys))
        )
    }
    events = []
    for row in rows:
        found = _milestone(row, order.currency, emails)
        if found is not None:
            kind, summary, facts = found
            events.append(
                TimelineEntry(
                    at=row.occurred_at,
                    event=kind,
                    summary=summary,
                    actor_role=row.actor_role,
                    facts=facts,
                )
            )
    return OrderTimeline(order_id=order.id, status=order.status, events=events)
