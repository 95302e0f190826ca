from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from app.db import DbSession
from app.models.status import LogLevel, LogSource
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor
from app.system_logs import service
from app.system_logs.schemas import SystemLogOut

router = APIRouter(prefix="/system-logs", tags=["system logs"])
ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(value: object) -> object:
    """RFC 3339 date-times only, as the document says (pydantic alone also takes a number of
    seconds, `?until=0.5`)."""
    if isinstance(value, str) and not ISO_DATE_TIME.match(value):
        raise ValueError("expected a date-time such as 2026-12-01T09:00:00Z")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_only)]


@router.get("", response_model=Page[SystemLogOut])
def list_system_logs(
    actor: AdminActor,
    session: DbSession,
    level: Annotated[LogLevel | None, Query(description="This level and above")] = None,
    source: Annotated[LogSource | None, Query()] = None,
    since: Annotated[Moment | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[Moment | None, Query(description="Before this time")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SystemLogOut]:
    """Warnings and errors of the API, the worker and the pipelines, newest first. Redacted
    when written (no PHI), kept SYSTEM_LOG_RETENTION_DAYS."""
    rows = service.list_entries(
        session, level=level, source=source, since=since, until=until, limit=limit, cursor=cursor
    )
    return rows.map(SystemLogOut.model_validate).page()
