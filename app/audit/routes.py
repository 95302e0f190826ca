from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BeforeValidator, StringConstraints

from app.actor import Role
from app.audit import service
from app.audit.schemas import AuditEntryOut, ChainStatus, PhiReadReview, PhiReadsOut
from app.db import DbSession
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor

router = APIRouter(prefix="/audit", tags=["audit"])

AuditAction = Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z_]+(\.[a-z_]*)?$")]


def _iso_instant(value: object) -> object:
    # The document says `date-time`; pydantic would also take a number as seconds since 1970.
    if isinstance(value, str) and not ISO_INSTANT.match(value):
        raise ValueError("an instant is written like 2026-12-01T09:30:00-05:00")
    return value


ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_instant)]
From = Annotated[Instant, Query(description="From this time (inclusive)")]
To = Annotated[Instant, Query(description="Before this time (exclusive)")]


@router.get("", response_model=Page[AuditEntryOut])
def read_audit_log(
    actor: AdminActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
    entity_type: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    actor_subject: Annotated[str | None, Query(max_length=255)] = None,
    actor_role: Annotated[Role | None, Query()] = None,
    action: Annotated[
        AuditAction | None,
        Query(description="Exact (`order.cancelled`), or a family ending in a dot (`order.`)"),
    ] = None,
    occurred_from: From | None = None,
    occurred_to: To | None = None,
) -> Page[AuditEntryOut]:
    """The audit log, newest first. A row's `seq` and `row_hash` are null until it is sealed
    into the hash chain (within about a second, by the worker). A period that ends before it
    starts holds no rows."""
    entries = service.list_entries(
        session,
        entity_type=entity_type,
        entity_id=entity_id,
        actor_subject=actor_subject,
        actor_role=actor_role,
        action=action,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        limit=limit,
        cursor=cursor,
    )
    return entries.map(AuditEntryOut.model_validate).page()


@router.get("/phi-reads", response_model=PhiReadReview)
def review_phi_reads(
    actor: AdminActor,
    session: DbSession,
    occurred_from: From,
    occurred_to: To,
    actor_role: Annotated[Role | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PhiReadReview:
    """The access review: who read PHI (patients' details, orders' items, order lists,
    prescriptions sent to pharmacies) in the period, one row per reader and role, most reads
    first (a period that ends before it starts has none)."""
    readers = service.phi_reads(
        session,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        actor_role=actor_role,
        limit=limit,
    )
    return PhiReadReview(
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        readers=[PhiReadsOut.model_validate(reader) for reader in readers],
    )


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
