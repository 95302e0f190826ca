"""Reading and pruning the system log (records written by app/system_logs/handler.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import SystemLogEntry
from app.models.status import LogLevel, LogSource
from app.pagination import Keyset, KeysetPage

NEWEST_FIRST = Keyset(SystemLogEntry.created_at, SystemLogEntry.id, descending=True)
# A minimum level and what it takes in.
AT_LEAST = {
    LogLevel.WARNING: [LogLevel.WARNING, LogLevel.ERROR, LogLevel.CRITICAL],
    LogLevel.ERROR: [LogLevel.ERROR, LogLevel.CRITICAL],
    LogLevel.CRITICAL: [LogLevel.CRITICAL],
}


def list_entries(
    session: Session,
    *,
    level: LogLevel | None,
    source: LogSource | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[SystemLogEntry]:
    """Records newest first, at or above `level`, of one `source`, within [since, until)."""
    query = select(SystemLogEntry)
    if level is not None:
        query = query.where(SystemLogEntry.level.in_(AT_LEAST[level]))
    if source is not None:
        query = query.where(SystemLogEntry.source == source)
    if since is not None:
        query = query.where(SystemLogEntry.created_at >= since)
    if until is not None:
        query = query.where(SystemLogEntry.created_at < until)
    return NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)


def prune(session: Session, *, retention_days: int, now: datetime | None = None) -> int:
    """Delete the records older than the retention; how many."""
    horizon = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    result = session.execute(delete(SystemLogEntry).where(SystemLogEntry.created_at < horizon))
    return int(result.rowcount)  # type: ignore[attr-defined]
