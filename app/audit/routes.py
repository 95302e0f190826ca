from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import service
from app.audit.schemas import AuditEntryOut, ChainStatus
from app.db import DbSession
from app.pagination import Cursor, Limit, Page
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
    entries = service.list_entries(
        session,
        entity_type=entity_type,
        entity_id=entity_id,
        actor_subject=actor_subject,
        limit=limit,
        cursor=cursor,
    )
    return entries.map(AuditEntryOut.model_validate).page()


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
