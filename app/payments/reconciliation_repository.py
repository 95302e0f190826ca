"""Reconciliation queries: the portal's side of a period, the exceptions and the runs."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import (
    Order,
    Payment,
    PaymentRefund,
    ReconciliationException,
    ReconciliationRun,
)
from app.models.status import ReconciliationKind, ReconciliationState
from app.pagination import Keyset, KeysetPage
from app.payments.reconciliation_service import Finding, PortalSide

NEWEST_EXCEPTIONS_FIRST = Keyset(
    ReconciliationException.first_seen_at, ReconciliationException.id, descending=True
)
NEWEST_RUNS_FIRST = Keyset(ReconciliationRun.started_at, ReconciliationRun.id, descending=True)


def intents_of_payments_created(session: Session, start: datetime, end: datetime) -> list[str]:
    return list(
        session.scalars(
            select(Payment.stripe_payment_intent_id).where(
                Payment.created_at >= start, Payment.created_at < end
            )
        )
    )


def portal_side(
    session: Session, intent_ids: Collection[str], order_ids: Collection[uuid.UUID]
) -> PortalSide:
    payments = {
        p.stripe_payment_intent_id: p
        for p in session.scalars(
            select(Payment).where(Payment.stripe_payment_intent_id.in_(list(intent_ids)))
        )
    }
    refunds = {
        refund_id: status
        for refund_id, status in session.execute(
            select(PaymentRefund.stripe_refund_id, PaymentRefund.status).where(
                PaymentRefund.payment_id.in_([p.id for p in payments.values()])
            )
        )
    }
    orders = set(session.scalars(select(Order.id).where(Order.id.in_(list(order_ids)))))
    return PortalSide(payments, refunds, orders)


def upsert_exception(
    session: Session, run: ReconciliationRun, finding: Finding, *, now: datetime
) -> tuple[ReconciliationException, bool]:
    """The exception row of the finding, created on first sight; later sightings move
    `last_seen_at` and refresh the amounts. Returns the row and whether it is new."""
    values = {
        "payment_intent_id": finding.payment_intent_id,
        "payment_id": finding.payment_id,
        "order_id": finding.order_id,
        "expected_cents": finding.expected_cents,
        "actual_cents": finding.actual_cents,
        "currency": finding.currency,
        "details": finding.details,
        "last_seen_at": now,
        "last_run_id": run.id,
    }
    statement = (
        insert(ReconciliationException)
        .values(
            id=uuid.uuid4(),
            kind=finding.kind,
            stripe_object_id=finding.stripe_object_id,
            first_seen_at=now,
            first_run_id=run.id,
            **values,
        )
        .on_conflict_do_update(index_elements=["kind", "stripe_object_id"], set_=values)
        .returning(ReconciliationException.id, ReconciliationException.first_run_id)
    )
    row_id, first_run = session.execute(statement).one()
    row = session.get(ReconciliationException, row_id, populate_existing=True)
    assert row is not None
    return row, first_run == run.id


def open_exceptions_of(
    session: Session, intent_ids: Collection[str]
) -> list[ReconciliationException]:
    """Open (neither repaired nor resolved) exceptions about these intents."""
    return list(
        session.scalars(
            select(ReconciliationException).where(
                ReconciliationException.payment_intent_id.in_(list(intent_ids)),
                state_is(ReconciliationState.OPEN),
            )
        )
    )


def all_open(session: Session) -> list[ReconciliationException]:
    return list(
        session.scalars(
            select(ReconciliationException)
            .where(state_is(ReconciliationState.OPEN))
            .order_by(ReconciliationException.first_seen_at, ReconciliationException.id)
        )
    )


def state_is(state: ReconciliationState) -> ColumnElement[bool]:
    repaired = ReconciliationException.repaired_at.is_not(None)
    resolved = ReconciliationException.resolved_at.is_not(None)
    if state == ReconciliationState.RESOLVED:
        return resolved
    if state == ReconciliationState.REPAIRED:
        return and_(repaired, ~resolved)
    return and_(~repaired, ~resolved)


def list_exceptions(
    session: Session,
    *,
    kind: ReconciliationKind | None,
    state: ReconciliationState | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[ReconciliationException]:
    query = select(ReconciliationException)
    if kind is not None:
        query = query.where(ReconciliationException.kind == kind)
    if state is not None:
        query = query.where(state_is(state))
    return NEWEST_EXCEPTIONS_FIRST.scalars(session, query, limit=limit, cursor=cursor)


def list_runs(session: Session, *, limit: int, cursor: str | None) -> KeysetPage[ReconciliationRun]:
    return NEWEST_RUNS_FIRST.scalars(session, select(ReconciliationRun), limit=limit, cursor=cursor)
