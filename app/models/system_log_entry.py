from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.status import LogLevel, LogSource, one_of


class SystemLogEntry(Base):
    """A warning or error of the API, the worker or the pipelines, written by
    `app.system_logs.handler` after `app.logs`'s redaction (no PHI), for admins to read.
    Pruned by the worker after SYSTEM_LOG_RETENTION_DAYS."""

    __tablename__ = "system_log"
    __table_args__ = (
        CheckConstraint(one_of("level", LogLevel), name="level"),
        CheckConstraint(one_of("source", LogSource), name="source"),
        Index("ix_system_log_created_at_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    level: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    logger: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    # The traceback, redacted and without local variables.
    exception: Mapped[str | None] = mapped_column(Text)
    process_id: Mapped[int | None]
