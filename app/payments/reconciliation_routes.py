"""Payment reconciliation for admins: the exceptions found, the runs, a run for a period, and
closing an exception with a note. Writes are audited; the lists hold no PHI (ids, amounts,
statuses), so reading them is not, as with the payments list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.db import DbSession
from app.errors import InvalidStateTransition, NotFound, problem_responses
from app.models import ReconciliationRun
from app.models.status import ReconciliationKind, ReconciliationState
from app.pagination import Cursor, Limit, Page
from app.payments import reconciliation
from app.payments import reconciliation_repository as repository
from app.payments.reconciliation_schemas import (
    ReconciliationExceptionOut,
    ReconciliationRunOut,
    ReconciliationRunRequest,
    ResolveRequest,
)
from app.payments.reconciliation_service import InvalidPeriod
from app.payments.service import PaymentProviderUnavailable
from app.security import AdminActor

router = APIRouter(prefix="/payments/reconciliation", tags=["payments"])


@router.get("/exceptions", response_model=Page[ReconciliationExceptionOut])
def list_exceptions(
    actor: AdminActor,
    session: DbSession,
    kind: Annotated[ReconciliationKind | None, Query()] = None,
    state: Annotated[ReconciliationState | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReconciliationExceptionOut]:
    """Disagreements between the portal's payments and Stripe's, newest first.
    `?state=open`: those neither repaired from Stripe's state nor resolved by staff."""
    rows = repository.list_exceptions(session, kind=kind, state=state, limit=limit, cursor=cursor)
    return rows.map(ReconciliationExceptionOut.of).page()


@router.post(
    "/exceptions/{exception_id}/resolve",
    response_model=ReconciliationExceptionOut,
    responses=problem_responses(NotFound, InvalidStateTransition),
)
def resolve_exception(
    exception_id: uuid.UUID, data: ResolveRequest, actor: AdminActor, session: DbSession
) -> ReconciliationExceptionOut:
    """Close an exception (e.g. after following it up at Stripe), with a note kept encrypted."""
    row = reconciliation.resolve_exception(session, actor, exception_id, data.note)
    return ReconciliationExceptionOut.of(row)


@router.get("/runs", response_model=Page[ReconciliationRunOut])
def list_runs(
    actor: AdminActor, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Page[ReconciliationRunOut]:
    """Reconciliation runs, newest first, with what each found and repaired."""
    return (
        repository.list_runs(session, limit=limit, cursor=cursor)
        .map(ReconciliationRunOut.model_validate)
        .page()
    )


@router.post(
    "/runs",
    response_model=ReconciliationRunOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(InvalidPeriod, PaymentProviderUnavailable),
)
def run_reconciliation(
    data: ReconciliationRunRequest, actor: AdminActor, session: DbSession
) -> ReconciliationRunOut:
    """Reconcile the PaymentIntents created in [start, end) now: missed webhooks and refunds
    are repaired from Stripe's state; running a period again changes nothing more."""
    report = reconciliation.reconcile(session, actor, start=data.start, end=data.end)
    run = session.get(ReconciliationRun, report.run_id)
    assert run is not None
    return ReconciliationRunOut.model_validate(run)
