from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.audit import service
from app.audit.schemas import AuditEntryOut, ChainStatus
from app.db import DbSession
from app.models import AuditEntry
from app.pagination import Cursor, Limit, Page, decode_cursor, page_of
from app.security import AdminActor

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=Page[AuditEntryOut])
def read_audit_log(
    actor: AdminActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
    entity_type: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    actor_subject: Annotated[str | None, Query(max_length=255)] = None,
) -> Page[AuditEntryOut]:
    """The audit log, newest first. A row's `seq` and `row_hash` are null until it is sealed
    into the hash chain (within about a second, by the worker)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if actor_subject:
        query = query.where(AuditEntry.actor_subject == actor_subject)
    if cursor:
        (before_id,) = decode_cursor(cursor, 1, parse=(int,))
        query = query.where(AuditEntry.id < before_id)
    rows = list(session.scalars(query))
    items = [AuditEntryOut.model_validate(r) for r in rows]
    return page_of(items, rows, limit, lambda row: (row.id,))


@router.get("/verification", response_model=ChainStatus)
def verify_audit_chain(actor: AdminActor, session: DbSession) -> ChainStatus:
    """Seals what is pending, then walks the whole hash chain (as `portal audit verify`)."""
    service.seal(session)
    result = service.verify_chain(session)
    return ChainStatus(
        ok=result.ok,
        rows_checked=result.rows_checked,
        head_hash=result.head_hash,
        first_bad_seq=result.first_break.seq if result.first_break else None,
        problem=result.first_break.problem if result.first_break else None,
        unsealed_rows=result.unsealed_rows,
        sealing_overdue=result.sealing_overdue,
    )
