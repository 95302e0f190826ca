"""Admin API of pharmacies and of the prescriptions sent to them. Doctors are refused: the
configuration holds credentials, and the logs every patient's prescriptions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.db import DbSession
from app.errors import Conflict, DuplicateValue, InvalidStateTransition, problem_responses
from app.models.status import PharmacySubmissionStatus
from app.pagination import Cursor, Limit, Page
from app.pharmacy import flows, service
from app.pharmacy.schemas import (
    ConnectionTest,
    LogOut,
    PharmacyCreate,
    PharmacyOut,
    PharmacyUpdate,
    SubmissionDetail,
    SubmissionOut,
)
from app.security import AdminActor

router = APIRouter(tags=["pharmacies"])


@router.get("/pharmacies", response_model=Page[PharmacyOut])
def list_pharmacies(
    actor: AdminActor,
    session: DbSession,
    active: Annotated[bool | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PharmacyOut]:
    """Pharmacies by name. Secrets are never returned: `api_key_set` and `client_secret_set`
    say whether one is stored."""
    page = service.list_pharmacies(session, active=active, limit=limit, cursor=cursor)
    return page.map(service.pharmacy_out).page()


@router.post(
    "/pharmacies",
    response_model=PharmacyOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(
        DuplicateValue, service.UnknownConnector, service.IncompleteAuth, Conflict
    ),
)
def create_pharmacy(data: PharmacyCreate, actor: AdminActor, session: DbSession) -> PharmacyOut:
    """A pharmacy and how to reach it. `is_default: true` makes it the default (the previous
    default stops being one)."""
    return service.pharmacy_out(service.create_pharmacy(session, actor, data))


@router.get("/pharmacies/{pharmacy_id}", response_model=PharmacyOut)
def get_pharmacy(pharmacy_id: uuid.UUID, actor: AdminActor, session: DbSession) -> PharmacyOut:
    return service.pharmacy_out(service.get_pharmacy(session, pharmacy_id))


@router.patch(
    "/pharmacies/{pharmacy_id}",
    response_model=PharmacyOut,
    responses=problem_responses(
        DuplicateValue, service.UnknownConnector, service.IncompleteAuth, Conflict
    ),
)
def update_pharmacy(
    pharmacy_id: uuid.UUID, data: PharmacyUpdate, actor: AdminActor, session: DbSession
) -> PharmacyOut:
    """Change what is given; a new `api_key` or `client_secret` replaces the stored one."""
    return service.pharmacy_out(service.update_pharmacy(session, actor, pharmacy_id, data))


@router.delete(
    "/pharmacies/{pharmacy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(service.PharmacyInUse),
)
def delete_pharmacy(pharmacy_id: uuid.UUID, actor: AdminActor, session: DbSession) -> None:
    """Delete a pharmacy nothing was sent to (products naming it fall back to the default);
    one with submissions answers 409: deactivate it instead."""
    service.delete_pharmacy(session, actor, pharmacy_id)


@router.post("/pharmacies/{pharmacy_id}/test-connection", response_model=ConnectionTest)
def test_connection(
    pharmacy_id: uuid.UUID, actor: AdminActor, session: DbSession
) -> ConnectionTest:
    """Run the connector's healthcheck now; the exchange is logged. `ok: false` carries the
    pharmacy's (or the network's) message."""
    return flows.test_connection(session, actor, pharmacy_id)


@router.get("/pharmacy-submissions", response_model=Page[SubmissionOut])
def list_submissions(
    actor: AdminActor,
    session: DbSession,
    status: Annotated[PharmacySubmissionStatus | None, Query()] = None,
    order_id: Annotated[uuid.UUID | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SubmissionOut]:
    """Newest first; `status=dead_letter` lists what waits for an admin."""
    page = service.list_submissions(
        session, actor, status=status, order_id=order_id, limit=limit, cursor=cursor
    )
    return page.page()


@router.get("/pharmacy-submissions/{submission_id}", response_model=SubmissionDetail)
def get_submission(
    submission_id: uuid.UUID, actor: AdminActor, session: DbSession
) -> SubmissionDetail:
    """The submission with every exchange of every attempt (bodies in `/logs`)."""
    return service.submission_detail(session, actor, submission_id)


@router.post(
    "/pharmacy-submissions/{submission_id}/resend",
    response_model=SubmissionOut,
    responses=problem_responses(InvalidStateTransition, Conflict),
)
def resend_submission(
    submission_id: uuid.UUID, actor: AdminActor, session: DbSession
) -> SubmissionOut:
    """Put a dead letter back in the queue with fresh attempts (one held for want of a
    pharmacy is routed now). 409 for any other status."""
    row = service.resend(session, actor, submission_id)
    return service.submission_out(row, service.pharmacy_name(session, row.pharmacy_id))


@router.get("/pharmacy-submissions/{submission_id}/logs", response_model=list[LogOut])
def read_submission_logs(
    submission_id: uuid.UUID, actor: AdminActor, session: DbSession
) -> list[LogOut]:
    """Every exchange with its bodies decrypted (they carry PHI); each read is audited."""
    return service.read_logs(session, actor, submission_id)
