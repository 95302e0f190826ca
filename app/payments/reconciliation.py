"""Payment reconciliation: the portal's payments compared with Stripe's for a period, each
disagreement kept as an exception, and missed webhooks repaired through the webhook's own path.

`reconcile` reads Stripe first, holding no lock (the PaymentIntents created in the period, their
charges, refunds and disputes, see `app.integrations.stripe.listing`), then, under the
reconciliation lock (`app.locks.reconciliation`), compares them with the portal's rows
(`app.payments.reconciliation_service`), records the exceptions, applies the repairs with
`app.payments.flows.receive_event` (the inbox stores each repair once under an id derived from
Stripe's object, so neither a second run nor a late webhook applies it twice) and records the
run. It runs in the caller's transaction; the caller commits. Running a period again changes
nothing more: no new exception, no second repair.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import stripe as stripe_sdk
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import locks, phi
from app.actor import Actor
from app.alerts.flows import sync_alerts
from app.alerts.service import Condition, one_line
from app.audit import service as audit
from app.errors import InvalidStateTransition, NotFound
from app.integrations.stripe import listing
from app.integrations.stripe.client import stripe_client
from app.models import Payment, PaymentRefund, ReconciliationException, ReconciliationRun
from app.models.base import utcnow
from app.models.status import AlertTopic, PaymentStatus, ReconciliationKind
from app.payments import flows
from app.payments import reconciliation_repository as repository
from app.payments import reconciliation_service as service
from app.payments.reconciliation_service import Finding
from app.payments.service import PaymentProviderUnavailable

RESOLVED_AUTOMATICALLY = "no longer seen at Stripe"


@dataclass(frozen=True)
class ReconciliationReport:
    run_id: uuid.UUID
    start: datetime
    end: datetime
    intents_examined: int
    # ReconciliationKind -> exceptions of that kind this run saw (new or known).
    counts: dict[str, int]
    new: int
    repaired: int
    # Exceptions seen before that this run no longer saw, closed as such.
    cleared: int
    # Every exception open now (not repaired, not resolved), whatever its period.
    open: int
    disputes_listed: bool
    alerts: dict[str, int] = field(default_factory=dict)


def note_context(exception_id: uuid.UUID) -> str:
    return f"reconciliation_exceptions.resolution_note.{exception_id}"


def reconcile(
    session: Session,
    actor: Actor,
    *,
    start: datetime,
    end: datetime,
    stripe: stripe_sdk.StripeClient | None = None,
) -> ReconciliationReport:
    """Reconcile the PaymentIntents created in [start, end) (at most 92 days)."""
    service.check_period(start, end, now=utcnow())
    client = stripe or stripe_client()
    also = repository.intents_of_payments_created(session, start, end)
    try:
        state = listing.read_period(client, start, end, also=also)
    except listing.StripeListingFailed as exc:
        raise PaymentProviderUnavailable(str(exc)) from exc

    locks.reconciliation(session)
    now = utcnow()
    run = ReconciliationRun(
        id=uuid.uuid4(),
        period_start=start,
        period_end=end,
        actor_subject=actor.subject[:255],
        started_at=now,
        disputes_listed=state.disputes_listed,
    )
    session.add(run)
    session.flush()
    examined = {intent["id"] for intent in state.intents}
    portal = repository.portal_side(session, examined, service.order_ids_named(state))
    findings = service.compare(state, portal)

    counts: Counter[str] = Counter()
    new = repaired = 0
    seen: set[tuple[str, str]] = set()
    for finding in findings:
        row, is_new = repository.upsert_exception(session, run, finding, now=now)
        seen.add((finding.kind, finding.stripe_object_id))
        counts[finding.kind] += 1
        new += is_new
        if finding.repair is not None and row.repaired_at is None and row.resolved_at is None:
            repaired += _repair(session, actor, row, finding)

    cleared = 0
    for row in repository.open_exceptions_of(session, examined):
        if (row.kind, row.stripe_object_id) not in seen:
            _resolve(session, Actor.system("reconciliation"), row, RESOLVED_AUTOMATICALLY)
            cleared += 1

    run.finished_at = utcnow()
    run.intents_examined = len(examined)
    run.exceptions_seen = len(findings)
    run.exceptions_new = new
    run.repaired = repaired
    run.counts = dict(sorted(counts.items()))
    audit.record(
        session,
        actor,
        "payment.reconciled",
        "reconciliation_run",
        run.id,
        after={
            "period_start": start,
            "period_end": end,
            "intents_examined": run.intents_examined,
            "counts": run.counts,
            "new": new,
            "repaired": repaired,
            "cleared": cleared,
            "disputes_listed": state.disputes_listed,
        },
    )
    session.flush()
    still_open = repository.all_open(session)
    # Last: the alert topic's lock is held until the commit (app.locks).
    alerts = sync_alerts(session, AlertTopic.RECONCILIATION, [_condition(r) for r in still_open])
    return ReconciliationReport(
        run_id=run.id,
        start=start,
        end=end,
        intents_examined=run.intents_examined,
        counts=run.counts,
        new=new,
        repaired=repaired,
        cleared=cleared,
        open=len(still_open),
        disputes_listed=state.disputes_listed,
        alerts={
            "opened": alerts.opened,
            "cleared": alerts.cleared,
            "still_open": alerts.still_open,
        },
    )


SUMMARIES = {
    ReconciliationKind.MISSED_PAYMENT: "paid at Stripe, not here (not repaired)",
    ReconciliationKind.MISSED_REFUND: "refunded at Stripe, not recorded here (not repaired)",
    ReconciliationKind.DISPUTED: "disputed at Stripe",
    ReconciliationKind.NOT_PAID_AT_STRIPE: "paid here, not at Stripe",
    ReconciliationKind.AMOUNT_DIFFERS: "amount differs from Stripe's",
    ReconciliationKind.CURRENCY_DIFFERS: "currency differs from Stripe's",
    ReconciliationKind.REFUNDED_HERE_ONLY: "more refunded here than at Stripe",
    ReconciliationKind.UNKNOWN_INTENT: "Stripe payment for an order the portal does not know",
}


def _amount(value: int | None, currency: str | None) -> str:
    return "?" if value is None else f"{value / 100:.2f} {(currency or '').upper()}".strip()


def _condition(row: ReconciliationException) -> Condition:
    """An open exception as an alert: its kind, Stripe's id and the amounts; no PHI."""
    summary = f"Payment reconciliation: {SUMMARIES[ReconciliationKind(row.kind)]}"
    summary += f" ({row.stripe_object_id}"
    if row.expected_cents is not None or row.actual_cents is not None:
        summary += f"; here {_amount(row.expected_cents, row.currency)}"
        summary += f", Stripe {_amount(row.actual_cents, row.currency)}"
    summary += ")"
    return Condition(
        key=f"reconciliation:{row.id}",
        summary=one_line(summary),
        details={
            "kind": row.kind,
            "stripe_object_id": row.stripe_object_id,
            "payment_intent_id": row.payment_intent_id,
            "order_id": str(row.order_id) if row.order_id else None,
            "expected_cents": row.expected_cents,
            "actual_cents": row.actual_cents,
            "currency": row.currency,
            "first_seen_at": row.first_seen_at.isoformat(),
        },
    )


def _repair(session: Session, actor: Actor, row: ReconciliationException, finding: Finding) -> int:
    """Apply the missed event through the webhook's path; 1 when the portal now agrees."""
    event = finding.repair
    assert event is not None
    # The payment was read before its lock is taken: a webhook may have changed it since, so
    # the webhook path must read it afresh under that lock, not from this session's memory.
    session.flush()
    session.expire_all()
    outcome = flows.receive_event(session, event)
    row.repair_event_id = event["id"]
    row.details = {**row.details, "repair_outcome": outcome[:200]}
    fixed = _agrees(session, finding)
    if fixed and finding.kind != ReconciliationKind.DISPUTED:
        # A dispute stays open once the portal knows it: staff answer it at Stripe.
        row.repaired_at = utcnow()
    audit.record(
        session,
        actor,
        "payment.reconciliation_repaired",
        "order",
        finding.order_id,
        after={
            "kind": finding.kind,
            "stripe_object_id": finding.stripe_object_id,
            "payment_intent_id": finding.payment_intent_id,
            "event_id": event["id"],
            "outcome": outcome[:200],
            "agrees": fixed,
        },
    )
    return int(fixed and finding.kind != ReconciliationKind.DISPUTED)


def _agrees(session: Session, finding: Finding) -> bool:
    session.flush()
    if finding.kind == ReconciliationKind.MISSED_PAYMENT:
        status = session.scalar(select(Payment.status).where(Payment.id == finding.payment_id))
        return status == PaymentStatus.SUCCEEDED
    if finding.kind == ReconciliationKind.MISSED_REFUND:
        return session.get(PaymentRefund, finding.stripe_object_id) is not None
    if finding.kind == ReconciliationKind.DISPUTED:
        disputed = session.scalar(select(Payment.disputed).where(Payment.id == finding.payment_id))
        return bool(disputed)
    return False


def _resolve(session: Session, actor: Actor, row: ReconciliationException, note: str) -> None:
    row.resolved_at = utcnow()
    row.resolved_by = actor.subject[:255]
    row.resolution_note_encrypted = phi.encrypt(note, note_context(row.id)) if note else None
    audit.record(
        session,
        actor,
        "payment.reconciliation_resolved",
        "reconciliation_exception",
        row.id,
        before={"state": "open"},
        after={"state": "resolved", "kind": row.kind, "stripe_object_id": row.stripe_object_id},
    )


def resolve_exception(
    session: Session, actor: Actor, exception_id: uuid.UUID, note: str
) -> ReconciliationException:
    """A person closes an exception (e.g. an amount confirmed with the patient), with a note."""
    locks.reconciliation(session)  # not while a run decides about it
    row = session.get(ReconciliationException, exception_id)
    if row is None:
        raise NotFound("reconciliation exception", exception_id)
    if row.resolved_at is not None:
        raise InvalidStateTransition("the exception is already resolved")
    _resolve(session, actor, row, note)
    session.flush()
    # A resolved exception's alert is cleared (last: the topic's lock is held to the commit).
    sync_alerts(
        session,
        AlertTopic.RECONCILIATION,
        [_condition(r) for r in repository.all_open(session)],
    )
    return row


def resolution_note(row: ReconciliationException) -> str | None:
    if row.resolution_note_encrypted is None:
        return None
    return phi.decrypt(row.resolution_note_encrypted, note_context(row.id))


def rotate_resolution_notes(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt the resolution notes not sealed by the active PHI key (`portal keys rotate`),
    so an old key can be retired; returns the notes changed. Resumable; the caller commits."""
    with_notes = select(ReconciliationException).where(
        ReconciliationException.resolution_note_encrypted.is_not(None)
    )
    changed = 0
    rows: list[ReconciliationException]
    for rows in locks.in_id_batches(session, with_notes, ReconciliationException.id, batch=batch):
        for row in rows:
            assert row.resolution_note_encrypted is not None
            resealed = phi.reseal(row.resolution_note_encrypted, note_context(row.id))
            if resealed is not None:
                row.resolution_note_encrypted = resealed
                changed += 1
        session.flush()
    return changed
