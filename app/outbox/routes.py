from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, tuple_

from app.db import DbSession
from app.errors import InvalidStateTransition, problem_responses
from app.models import OutboxMessage
from app.models.status import OutboxStatus
from app.outbox import service
from app.pagination import CREATED_AT_AND_ID, Cursor, Limit, Page, decode_cursor, page_of
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
    query = select(OutboxMessage).order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    if status:
        query = query.where(OutboxMessage.status == status)
    if cursor:
        created_at, message_id = decode_cursor(cursor, 2, parse=CREATED_AT_AND_ID)
        query = query.where(
            tuple_(OutboxMessage.created_at, OutboxMessage.id) < (created_at, message_id)
        )
    rows = list(session.scalars(query.limit(limit)))
    items = [OutboxMessageOut.model_validate(m) for m in rows]
    return page_of(items, rows, limit, lambda m: (m.created_at.isoformat(), m.id))


@router.post(
    "/{message_id}/resend",
    response_model=OutboxMessageOut,
    responses=problem_responses(InvalidStateTransition),
)
def resend(message_id: uuid.UUID, actor: AdminActor, session: DbSession) -> OutboxMessageOut:
    """Put a dead-lettered message back in the queue."""
    return OutboxMessageOut.model_validate(service.resend(session, actor, message_id))
