from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.db import DbSession
from app.errors import Conflict, DuplicateValue, NotFound, problem_responses
from app.pagination import Cursor, Limit, Page, page_of
from app.patients import service
from app.patients.schemas import PatientCreate, PatientOut
from app.schemas import EmailAddress
from app.security import StaffActor

router = APIRouter(prefix="/patients", tags=["patients"])


@router.post(
    "",
    response_model=PatientOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(NotFound, Conflict, DuplicateValue),
)
def create_patient(data: PatientCreate, actor: StaffActor, session: DbSession) -> PatientOut:
    """Doctors create their own patients; admins name the owning doctor."""
    return service.create_patient(session, actor, data)


@router.get("", response_model=Page[PatientOut])
def find_patients(
    actor: StaffActor,
    session: DbSession,
    email: Annotated[
        EmailAddress | None, Query(description="Exact e-mail (case-insensitive)")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PatientOut]:
    """A doctor's own patients (admins: all), newest first. Every patient returned is audited."""
    rows = service.find_patients(session, actor, email=email, limit=limit, cursor=cursor)
    return page_of(rows, rows, limit, lambda p: (p.created_at.isoformat(), p.id))


@router.get("/{patient_id}", response_model=PatientOut)
def read_patient(patient_id: uuid.UUID, actor: StaffActor, session: DbSession) -> PatientOut:
    return service.read_patient(session, actor, patient_id)
