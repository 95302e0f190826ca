from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from app.db import DbSession
from app.errors import InvalidStateTransition, problem_responses
from app.models.status import OutboxStatus
from app.outbox import service
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor

router = APIRouter(prefix="/outbox", tags=["outbox"])


class OutboxMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    topic: str
    dedupe_key: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


@router.get("", response_model=Page[OutboxMessageOut])
def list_messages(
    actor: AdminActor,
    session: DbSession,
    status: Annotated[OutboxStatus | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OutboxMessageOut]:
    """Outgoing calls (refunds, notifications), newest first; `?status=dead`: dead letters."""
    messages = service.list_messages(session, status=status, limit=limit, cursor=cursor)
    return messages.map(OutboxMessageOut.model_validate).page()


@router.post(
    "/{message_id}/resend",
    response_model=OutboxMessageOut,
    responses=problem_responses(InvalidStateTransition),
)
def resend(message_id: uuid.UUID, actor: AdminActor, session: DbSession) -> OutboxMessageOut:
    """Put a dead-lettered message back in the queue."""
    return OutboxMessageOut.model_validate(service.resend(session, actor, message_id))
