from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator

from app.schemas import StrictInput

PatientName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ().-]{5,23}$")]


class PatientCreate(StrictInput):
    name: PatientName
    email: EmailStr
    phone: Phone
    date_of_birth: date
    doctor_id: uuid.UUID | None = Field(
        default=None, description="Admins: the doctor who owns the patient. Doctors: omit."
    )

    @field_validator("date_of_birth")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if value >= date.today():
            raise ValueError("date_of_birth must be in the past")
        if value.year < 1900:
            raise ValueError("date_of_birth must be after 1900")
        return value


class PatientSearch(StrictInput):
    email: EmailStr = Field(description="Exact e-mail (case-insensitive)")


class PatientOut(BaseModel):
    id: uuid.UUID
    doctor_id: uuid.UUID | None
    name: str
    email: str
    phone: str
    date_of_birth: date
    created_at: datetime
