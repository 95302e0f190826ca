from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.models import ReconciliationException
from app.models.status import ReconciliationKind, ReconciliationState
from app.schemas import Note, StrictInput


class ReconciliationRunRequest(StrictInput):
    start: AwareDatetime = Field(description="Start of the period (inclusive), with a time zone")
    end: AwareDatetime = Field(
        description="End of the period (exclusive); at most 92 days after start"
    )


class ResolveRequest(StrictInput):
    note: Note = Field(description="Why the exception is closed (kept encrypted)")


class ReconciliationRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    period_start: datetime
    period_end: datetime
    actor_subject: str
    started_at: datetime
    finished_at: datetime | None
    intents_examined: int
    exceptions_seen: int
    exceptions_new: int
    repaired: int
    counts: dict[str, int]
    disputes_listed: bool


class ReconciliationExceptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: ReconciliationKind
    state: ReconciliationState
    stripe_object_id: str
    payment_intent_id: str | None
    payment_id: uuid.UUID | None
    order_id: uuid.UUID | None
    expected_cents: int | None
    actual_cents: int | None
    currency: str | None
    details: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    repaired_at: datetime | None
    repair_event_id: str | None
    resolved_at: datetime | None
    resolved_by: str | None

    @classmethod
    def of(cls, row: ReconciliationException) -> ReconciliationExceptionOut:
        state = (
            ReconciliationState.RESOLVED
            if row.resolved_at is not None
            else ReconciliationState.REPAIRED
            if row.repaired_at is not None
            else ReconciliationState.OPEN
        )
        return cls.model_validate({**_columns(row), "state": state})


def _columns(row: ReconciliationException) -> dict[str, Any]:
    return {
        name: getattr(row, name)
        for name in ReconciliationExceptionOut.model_fields
        if name != "state"
    }
