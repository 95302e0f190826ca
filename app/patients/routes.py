from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request, status

from app.db import DbSession
from app.errors import (
    Conflict,
    DuplicateValue,
    Forbidden,
    NotFound,
    PhiInUrl,
    problem_responses,
    raises,
)
from app.pagination import Cursor, Limit, Page
from app.patients import service
from app.patients.schemas import PatientCreate, PatientOut, PatientSearch, PatientUpdate
from app.security import StaffActor

router = APIRouter(prefix="/patients", tags=["patients"])
# Query parameters that would carry PHI. Unknown query parameters are otherwise ignored, so an
# old client's `?email=` would silently list every patient: refuse it and say where it goes.
PHI_QUERY_PARAMETERS = frozenset({"email", "name", "phone", "date_of_birth"})


@raises(PhiInUrl)
def _no_phi_in_query(request: Request) -> None:
    sent = {key.lower() for key in request.query_params}
    if sent & PHI_QUERY_PARAMETERS:
        raise PhiInUrl(
            "search patients by e-mail with POST /api/v1/patients/search and "
            '{"email": ...} in the body; personal data in a URL ends up in access logs'
        )


@router.post(
    "",
    response_model=PatientOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(NotFound, Conflict, DuplicateValue),
)
def create_patient(data: PatientCreate, actor: StaffActor, session: DbSession) -> PatientOut:
    """Doctors create their own patients; admins name the owning doctor."""
    return service.create_patient(session, actor, data)


@router.get("", response_model=Page[PatientOut], dependencies=[Depends(_no_phi_in_query)])
def list_patients(
    actor: StaffActor, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Page[PatientOut]:
    """A doctor's own patients (admins: all), newest first. Every patient returned is audited.

    `400 /problems/phi-in-url` for `?email=` (or another PHI field): use `POST /patients/search`.
    """
    return service.find_patients(session, actor, email=None, limit=limit, cursor=cursor).page()


@router.post("/search", response_model=Page[PatientOut])
def search_patients(
    data: PatientSearch,
    actor: StaffActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PatientOut]:
    """The actor's patients with this e-mail (a doctor: their own), newest first; the e-mail
    travels in the body, not the URL. Every patient returned is audited as a PHI read."""
    found = service.find_patients(session, actor, email=data.email, limit=limit, cursor=cursor)
    return found.page()


@router.get("/{patient_id:uuid}", response_model=PatientOut)
def read_patient(patient_id: uuid.UUID, actor: StaffActor, session: DbSession) -> PatientOut:
    return service.read_patient(session, actor, patient_id)


@router.patch(
    "/{patient_id:uuid}",
    response_model=PatientOut,
    responses=problem_responses(NotFound, Forbidden, DuplicateValue),
)
def update_patient(
    patient_id: uuid.UUID, data: PatientUpdate, actor: StaffActor, session: DbSession
) -> PatientOut:
    """Correct a patient's name, e-mail, phone or date of birth (fields left out stay as they
    are). Only the patient's own doctor: another doctor gets 404, an admin 403. Audited as
    `patient.updated`, naming the changed fields with their values redacted."""
    return service.update_patient(session, actor, patient_id, data)
