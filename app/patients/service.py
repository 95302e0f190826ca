"""Patients and their PHI. Decryption happens here only, and every decryption is audited."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import locks, phi
from app.actor import Actor, Role
from app.audit import service as audit
from app.errors import Conflict, DuplicateValue, Forbidden, NotFound
from app.models import Patient, User
from app.models.patient import PHI_FIELDS
from app.models.status import StaffRole
from app.pagination import Keyset, KeysetPage
from app.patients.schemas import PatientCreate, PatientOut, PatientUpdate


def phi_context(patient_id: uuid.UUID, field: str) -> str:
    return f"patients.{field}.{patient_id}"


def visible_patients(actor: Actor) -> Select[Patient]:
    """Patients the actor may see: a doctor their own, others all (`Actor.sees_all_patients`)."""
    query = select(Patient)
    if not actor.sees_all_patients:
        query = query.where(Patient.doctor_id == actor.user_id)
    return query


def get_visible_patient(
    session: Session, actor: Actor, patient_id: uuid.UUID, *, for_update: bool = False
) -> Patient:
    """The patient, or the same 404 whether it is missing or someone else's."""
    query = visible_patients(actor).where(Patient.id == patient_id)
    if for_update:
        query = locks.row_of(query)
    patient = session.scalar(query)
    if patient is None:
        raise NotFound("patient", patient_id)
    return patient


def _owner_for(session: Session, actor: Actor, requested: uuid.UUID | None) -> uuid.UUID | None:
    # Who may own the patient depends on the caller's role, which no request schema can say:
    # a role-dependent refusal is a 403, a doctor that does not exist a 404, a deactivated one 409.
    if actor.role == Role.DOCTOR:
        if requested is not None and requested != actor.user_id:
            raise Forbidden("doctors create patients for themselves; omit doctor_id")
        return actor.user_id
    if requested is None:
        raise Forbidden("admins create patients for a doctor: name the owner in doctor_id")
    doctor = session.get(User, requested)
    if doctor is None or doctor.role != StaffRole.DOCTOR:
        raise NotFound("doctor", requested)
    if not doctor.active:
        raise Conflict(f"doctor {requested} is deactivated", field="doctor_id")
    return doctor.id


def create_patient(session: Session, actor: Actor, data: PatientCreate) -> PatientOut:
    """A doctor's patient (an admin names the doctor)."""
    doctor_id = _owner_for(session, actor, data.doctor_id)
    email_hash = phi.lookup_hash(phi.normalise_email(data.email))
    existing = session.scalar(
        select(Patient.id).where(Patient.doctor_id == doctor_id, Patient.email_hash == email_hash)
    )
    if existing is not None:
        raise DuplicateValue(
            "this doctor already has a patient with that e-mail", patient_id=str(existing)
        )
    return decrypt_patient(_insert_patient(session, actor, data, doctor_id, email_hash))


# Candidates compared per self-order: each costs a decryption of three values.
SELF_ORDER_MATCH_CANDIDATES = 20


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _same_phone(a: str, b: str) -> bool:
    return [c for c in a if c.isdigit()] == [c for c in b if c.isdigit()]


def self_order_patient(session: Session, actor: Actor, data: PatientCreate) -> Patient:
    """The patient record a public self-order is placed for; the caller learns nothing from it.

    A self-registered patient (no doctor) is reused only when the e-mail (by its hash), the date
    of birth, the name and the phone all equal what is stored: whoever holds the order's payment
    link sees the record's details, so an anonymous request may only reach a record whose
    details it already typed. Anything else (another date of birth, other details, a doctor's
    patient with that e-mail) gets a new self-order record; an existing record is never
    changed by an anonymous request.
    """
    email_hash = phi.lookup_hash(phi.normalise_email(data.email))
    # One self-order per e-mail at a time decides whether a record exists, so two identical
    # first orders sent together do not create two records.
    locks.self_order_email(session, email_hash)
    candidates = session.scalars(
        select(Patient)
        .where(Patient.doctor_id.is_(None), Patient.email_hash == email_hash)
        .order_by(Patient.created_at.desc(), Patient.id)
        .limit(SELF_ORDER_MATCH_CANDIDATES)
    )
    for candidate in candidates:
        stored = decrypt_patient(candidate)
        if (
            stored.date_of_birth == data.date_of_birth
            and _same_name(stored.name, data.name)
            and _same_phone(stored.phone, data.phone)
        ):
            audit.record(session, actor, "patient.matched", "patient", candidate.id)
            return candidate
    return _insert_patient(session, actor, data, None, email_hash)


def _insert_patient(
    session: Session,
    actor: Actor,
    data: PatientCreate,
    doctor_id: uuid.UUID | None,
    email_hash: str,
) -> Patient:
    patient_id = uuid.uuid4()
    values = {
        "name": data.name,
        "email": phi.normalise_email(data.email),
        "phone": data.phone,
        "date_of_birth": data.date_of_birth.isoformat(),
    }
    patient = Patient(
        id=patient_id,
        doctor_id=doctor_id,
        email_hash=email_hash,
        **{f"{f}_encrypted": phi.encrypt(v, phi_context(patient_id, f)) for f, v in values.items()},
    )
    session.add(patient)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DuplicateValue("this doctor already has a patient with that e-mail") from exc
    session.refresh(patient)
    audit.record(
        session,
        actor,
        "patient.created",
        "patient",
        patient.id,
        after={"doctor_id": doctor_id, **values},
        redact=PHI_FIELDS,
    )
    return patient


def update_patient(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: PatientUpdate
) -> PatientOut:
    """Correct a patient's details: their own doctor only (another doctor: the 404 of a missing
    patient; an admin: 403, since the details are the doctor's record of their patient).

    The audit row names the fields that changed, their values redacted (a request that changes
    nothing is audited as a read: the answer shows the details). An e-mail another of the
    doctor's patients holds is a 409, with nothing changed.
    """
    patient = get_visible_patient(session, actor, patient_id, for_update=True)
    if actor.role != Role.DOCTOR:
        raise Forbidden("only the patient's own doctor edits their details")
    current = decrypt_patient(patient)
    stored = {
        "name": current.name,
        "email": current.email,
        "phone": current.phone,
        "date_of_birth": current.date_of_birth.isoformat(),
    }
    wanted = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    if "email" in wanted:
        wanted["email"] = phi.normalise_email(wanted["email"])
    if "date_of_birth" in wanted:
        wanted["date_of_birth"] = wanted["date_of_birth"].isoformat()
    changes = {k: v for k, v in wanted.items() if stored[k] != v}
    if "email" in changes:
        email_hash = phi.lookup_hash(changes["email"])
        taken = session.scalar(
            select(Patient.id).where(
                Patient.doctor_id == patient.doctor_id,
                Patient.email_hash == email_hash,
                Patient.id != patient.id,
            )
        )
        if taken is not None:
            raise DuplicateValue(
                "this doctor already has a patient with that e-mail",
                field="email",
                patient_id=str(taken),
            )
        patient.email_hash = email_hash
    for name, value in changes.items():
        setattr(patient, f"{name}_encrypted", phi.encrypt(value, phi_context(patient.id, name)))
    if changes:
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as exc:  # the same e-mail saved by a concurrent request
            raise DuplicateValue("this doctor already has a patient with that e-mail") from exc
        audit.record(
            session,
            actor,
            "patient.updated",
            "patient",
            patient.id,
            before={k: stored[k] for k in changes},
            after=changes,
            redact=PHI_FIELDS,
        )
    else:  # nothing to change: the answer still shows the details
        audit.record(session, actor, "patient.read", "patient", patient.id)
    return decrypt_patient(patient)


def decrypt_patient(patient: Patient) -> PatientOut:
    def field(name: str) -> str:
        return phi.decrypt(getattr(patient, f"{name}_encrypted"), phi_context(patient.id, name))

    return PatientOut(
        id=patient.id,
        doctor_id=patient.doctor_id,
        name=field("name"),
        email=field("email"),
        phone=field("phone"),
        date_of_birth=date.fromisoformat(field("date_of_birth")),
        created_at=patient.created_at,
    )


def read_patient(session: Session, actor: Actor, patient_id: uuid.UUID) -> PatientOut:
    patient = get_visible_patient(session, actor, patient_id)
    view = decrypt_patient(patient)
    audit.record(session, actor, "patient.read", "patient", patient.id)
    return view


NEWEST_FIRST = Keyset(Patient.created_at, Patient.id, descending=True)


def find_patients(
    session: Session,
    actor: Actor,
    *,
    email: str | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[PatientOut]:
    """The actor's patients (newest first), optionally by e-mail; each one read is audited."""
    query = visible_patients(actor)
    if email:
        query = query.where(Patient.email_hash == phi.lookup_hash(phi.normalise_email(email)))
    patients = NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
    views = patients.map(decrypt_patient)
    for patient in patients.rows:
        audit.record(session, actor, "patient.read", "patient", patient.id)
    return views


def rotate_keys(
    session: Session, *, batch: int = 500, progress: Callable[[int], None] | None = None
) -> int:
    """Re-encrypt every PHI value not sealed by the active key. Returns patients re-encrypted.

    Runs in batches; each value is decrypted with the key it names, so it can resume after an
    interruption. The caller commits.
    """
    changed = 0
    patients: list[Patient]
    for patients in locks.in_id_batches(session, select(Patient), Patient.id, batch=batch):
        for patient in patients:
            touched = False
            for name in PHI_FIELDS:
                column = f"{name}_encrypted"
                resealed = phi.reseal(getattr(patient, column), phi_context(patient.id, name))
                if resealed is not None:
                    setattr(patient, column, resealed)
                    touched = True
            changed += touched
        session.flush()
        if progress:
            progress(len(patients))
    return changed


def patient_summary(patient: Patient) -> dict[str, Any]:
    return {"id": patient.id, "doctor_id": patient.doctor_id}
