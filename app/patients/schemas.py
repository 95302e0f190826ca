from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from app.schemas import DateBounds, EmailAddress, StrictInput, days_from_today

PatientName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Ends with a digit or punctuation: bodies are stripped of surrounding spaces before the pattern
# is checked, so a pattern that allowed them would accept what its document refuses.
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ().-]{4,22}[0-9().-]$")]


def _date_as_text(value: Any) -> Any:
    # JSON has no date type: the document says a `YYYY-MM-DD` string, and pydantic would
    # otherwise take a number as seconds since 1970 (0 -> 1970-01-01).
    if not isinstance(value, str | date):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


# Checked where the request is validated (a 422 naming the field), for staff and self-orders alike.
DateOfBirth = Annotated[
    date,
    BeforeValidator(_date_as_text),
    DateBounds(
        date(1900, 1, 1), days_from_today(-1), "date_of_birth must be a past date, 1900 or later"
    ),
]


class PatientCreate(StrictInput):
    name: PatientName
    email: EmailAddress
    phone: Phone
    date_of_birth: DateOfBirth
    doctor_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "Admins: the active doctor who owns the patient (omitted: 403; unknown: 404; "
            "deactivated: 409). Doctors: omit it or send their own id (another doctor's: 403)."
        ),
    )


class PatientUpdate(StrictInput):
    """What the patient's doctor corrects; a field left out (or null) stays as it is."""

    name: PatientName | None = None
    email: EmailAddress | None = None
    phone: Phone | None = None
    date_of_birth: DateOfBirth | None = None


class PatientSearch(StrictInput):
    email: EmailAddress = Field(description="Exact e-mail (case-insensitive)")


class PatientOut(BaseModel):
    id: uuid.UUID
    doctor_id: uuid.UUID | None
    name: str
    email: str
    phone: str
    date_of_birth: date
    created_at: datetime
