"""The rules of payment reconciliation: what counts as a disagreement between Stripe and the
portal, and which ones Stripe's state may repair. No database, no HTTP: Stripe's side comes as
the plain dicts `app.integrations.stripe.listing` reads, the portal's as `PortalSide`.

A repair is the Stripe event the portal missed, rebuilt from the object Stripe holds now and
given an id derived from that object and its state (`repair_event_id`): applied through the
webhook inbox, a repeat of the same repair is a duplicate there, and the real event arriving
late changes nothing (every event is applied monotonically: a payment never goes back, a refund
is counted once by its id).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.errors import PortalError
from app.integrations.stripe.listing import StripeState, cents, reference
from app.models import Payment
from app.models.status import PaymentStatus, ReconciliationKind, RefundStatus
from app.payments.service import DISPUTE_KEPT_THE_MONEY, DISPUTE_LOST

MAX_PERIOD = timedelta(days=92)
# Intent statuses where money has moved or is moving; an abandoned intent is nobody's concern.
MONEY_STATUSES = {PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_CAPTURE}
COUNTED_REFUNDS = {RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED}
# Repairs are applied in this order: a payment before its refunds, refunds before disputes.
REPAIR_ORDER = {
    ReconciliationKind.MISSED_PAYMENT: 0,
    ReconciliationKind.MISSED_REFUND: 1,
    ReconciliationKind.DISPUTED: 2,
}


class InvalidPeriod(PortalError):
    """A period the document's types allow but reconciliation does not (400, like other rules
    beyond the schema)."""

    status = 400
    slug = "invalid-reconciliation-period"
    title = "The reconciliation period is not valid"


def check_period(start: datetime, end: datetime, *, now: datetime) -> None:
    """A period has a time zone, starts before it ends, spans at most `MAX_PERIOD` and does not
    start in the future."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidPeriod("start and end need a time zone (e.g. 2026-11-01T00:00:00Z)")
    if start >= end:
        raise InvalidPeriod("start must be before end", field="start")
    if end - start > MAX_PERIOD:
        raise InvalidPeriod(f"a period spans at most {MAX_PERIOD.days} days", field="end")
    if start > now:
        raise InvalidPeriod("the period starts in the future", field="start")


@dataclass(frozen=True)
class PortalSide:
    """What the portal holds for the intents Stripe listed."""

    payments: dict[str, Payment]  # intent id -> payment
    refunds: dict[str, str]  # Stripe refund id -> its status here
    orders: set[uuid.UUID]  # the intents' metadata order ids that name an order here


@dataclass(frozen=True)
class Finding:
    kind: ReconciliationKind
    stripe_object_id: str
    payment_intent_id: str | None
    payment_id: uuid.UUID | None = None
    order_id: uuid.UUID | None = None
    expected_cents: int | None = None
    actual_cents: int | None = None
    currency: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The missed Stripe event, rebuilt from Stripe's current state, when it may be applied.
    repair: dict[str, Any] | None = None


def repair_event_id(kind: str, object_id: str, state: str) -> str:
    digest = hashlib.sha256(f"{kind}:{object_id}:{state}".encode()).hexdigest()[:24]
    return f"evt_reconciled_{digest}"


def _event(kind: str, obj: dict[str, Any], state: str) -> dict[str, Any]:
    return {
        "id": repair_event_id(kind, str(obj["id"]), state),
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def _dispute_repair(payment: Payment, dispute: dict[str, Any]) -> dict[str, Any] | None:
    """The event that brings the portal to what Stripe lists (None: it agrees): an open dispute
    sets the `disputed` flag; a won one clears it; a lost one is recorded (the flag alone
    does not say whether the loss was, and the webhook path applies a close only once)."""
    status = dispute.get("status")
    if status == DISPUTE_LOST:
        return _event("charge.dispute.closed", dispute, status)
    if status in DISPUTE_KEPT_THE_MONEY:
        return _event("charge.dispute.closed", dispute, status) if payment.disputed else None
    return None if payment.disputed else _event("charge.dispute.created", dispute, "created")


def metadata_order_id(intent: dict[str, Any]) -> str | None:
    metadata = intent.get("metadata")
    value = metadata.get("order_id") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def _order_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def order_ids_named(state: StripeState) -> set[uuid.UUID]:
    """The order ids the intents' metadata name (for the portal to look up)."""
    named = (_order_uuid(metadata_order_id(i)) for i in state.intents)
    return {order_id for order_id in named if order_id is not None}


def _charge(intent: dict[str, Any]) -> dict[str, Any]:
    charge = intent.get("latest_charge")
    return charge if isinstance(charge, dict) else {}


def _received(intent: dict[str, Any]) -> int | None:
    """What Stripe took (succeeded), else what the intent asks for."""
    if intent.get("status") == PaymentStatus.SUCCEEDED:
        received = cents(intent.get("amount_received"))
        if received is not None:
            return received
    return cents(intent.get("amount"))


def compare(state: StripeState, portal: PortalSide) -> list[Finding]:
    """Every disagreement between Stripe's intents of the period and the portal, repairs first
    in `REPAIR_ORDER`."""
    found: list[Finding] = []
    for intent in state.intents:
        payment = portal.payments.get(intent["id"])
        if payment is None:
            found.extend(_unknown(intent, portal))
        else:
            found.extend(_known(intent, payment, state, portal))
    return sorted(found, key=lambda f: REPAIR_ORDER.get(f.kind, len(REPAIR_ORDER)))


def _unknown(intent: dict[str, Any], portal: PortalSide) -> list[Finding]:
    named = metadata_order_id(intent)
    if named is None or intent.get("status") not in MONEY_STATUSES:
        return []  # not the portal's intent (no order id), or no money moved
    order_id = _order_uuid(named)
    known = order_id is not None and order_id in portal.orders
    return [
        Finding(
            ReconciliationKind.UNKNOWN_INTENT,
            intent["id"],
            intent["id"],
            order_id=order_id if known else None,
            actual_cents=_received(intent),
            currency=_currency(intent),
            details={
                "stripe_status": intent.get("status"),
                "metadata_order_id": named[:64],
                "order_known": known,
            },
        )
    ]


def _currency(obj: dict[str, Any]) -> str | None:
    currency = obj.get("currency")
    return currency.lower()[:3] if isinstance(currency, str) else None


def _known(
    intent: dict[str, Any], payment: Payment, state: StripeState, portal: PortalSide
) -> list[Finding]:
    found: list[Finding] = []
    pi = intent["id"]
    ids = {"payment_intent_id": pi, "payment_id": payment.id, "order_id": payment.order_id}
    status = intent.get("status")
    statuses = {"stripe_status": status, "portal_status": payment.status}
    amount, currency = _received(intent), _currency(intent)
    amount_ok = amount == payment.amount_cents
    currency_ok = currency == payment.currency.lower()
    if not amount_ok:
        found.append(
            Finding(
                ReconciliationKind.AMOUNT_DIFFERS,
                pi,
                **ids,
                expected_cents=payment.amount_cents,
                actual_cents=amount,
                currency=payment.currency,
                details=statuses,
            )
        )
    if not currency_ok:
        found.append(
            Finding(
                ReconciliationKind.CURRENCY_DIFFERS,
                pi,
                **ids,
                expected_cents=payment.amount_cents,
                actual_cents=amount,
                currency=currency,
                details=statuses | {"portal_currency": payment.currency},
            )
        )
    paid_here = payment.status == PaymentStatus.SUCCEEDED
    paid_there = status == PaymentStatus.SUCCEEDED
    # Stripe's success is applied only for the amount and currency the portal asked for: the
    # webhook path settles the order with the payment's own amount.
    repair_payment = paid_there and not paid_here and amount_ok and currency_ok
    if paid_there and not paid_here:
        found.append(
            Finding(
                ReconciliationKind.MISSED_PAYMENT,
                pi,
                **ids,
                expected_cents=payment.amount_cents,
                actual_cents=amount,
                currency=payment.currency,
                details=statuses
                | ({} if repair_payment else {"not_repaired": "amount or currency differs"}),
                repair=_event("payment_intent.succeeded", intent, "succeeded")
                if repair_payment
                else None,
            )
        )
    if paid_here and not paid_there:
        found.append(
            Finding(
                ReconciliationKind.NOT_PAID_AT_STRIPE,
                pi,
                **ids,
                expected_cents=payment.amount_cents,
                currency=payment.currency,
                details=statuses,
            )
        )
    refunds_repairable = paid_here or repair_payment
    counted_there = 0
    for refund in state.refunds.get(pi, []):
        refund_status = refund.get("status")
        refund_amount = cents(refund.get("amount"))
        if refund_status not in COUNTED_REFUNDS or not refund_amount:
            continue
        counted_there += refund_amount
        if refund["id"] in portal.refunds:
            continue
        # The refund as the webhook would carry it (the stand-in leaves out the intent of a
        # refund made against the charge).
        obj = {**refund, "amount": refund_amount, "payment_intent": pi}
        found.append(
            Finding(
                ReconciliationKind.MISSED_REFUND,
                refund["id"],
                **ids,
                expected_cents=0,
                actual_cents=refund_amount,
                currency=_currency(refund) or payment.currency,
                details={"refund_status": refund_status, "portal_refunded_cents": 0}
                | ({} if refunds_repairable else {"not_repaired": "payment not settled here"}),
                repair=_event("refund.updated", obj, str(refund_status))
                if refunds_repairable
                else None,
            )
        )
    charge = _charge(intent)
    refunded_there = max(counted_there, cents(charge.get("amount_refunded")) or 0)
    if payment.refunded_cents > refunded_there:
        found.append(
            Finding(
                ReconciliationKind.REFUNDED_HERE_ONLY,
                pi,
                **ids,
                expected_cents=payment.refunded_cents,
                actual_cents=refunded_there,
                currency=payment.currency,
                details=statuses,
            )
        )
    disputes = state.disputes.get(pi, [])
    if disputes or charge.get("disputed") is True:
        dispute = disputes[0] if disputes else {}
        dispute_id = reference(dispute.get("id")) or reference(charge.get("id")) or pi
        reason = dispute.get("reason")
        obj = {
            "id": dispute_id,
            "object": "dispute",
            "payment_intent": pi,
            "charge": reference(charge.get("id")),
            "amount": cents(dispute.get("amount")),
            "currency": _currency(dispute) or currency,
            "status": dispute.get("status"),
            "reason": reason if isinstance(reason, str) else None,
        }
        found.append(
            Finding(
                ReconciliationKind.DISPUTED,
                pi,
                **ids,
                expected_cents=payment.amount_cents,
                actual_cents=cents(dispute.get("amount")),
                currency=payment.currency,
                details={
                    "dispute_id": dispute_id,
                    "dispute_status": obj["status"],
                    "reason": obj["reason"],
                    "known_here": payment.disputed,
                },
                # The portal's own flag (fulfilment refuses a disputed order) is set, or for a
                # closed dispute set as it ended, through the webhook path; the exception stays
                # open for staff to answer the dispute.
                repair=_dispute_repair(payment, obj),
            )
        )
    return found
