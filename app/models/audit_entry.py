from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class AuditEntry(Base):
    """One row of the hash-chained, append-only audit log.

    A row is inserted unsealed, in its business transaction; the sealer then gives it its place
    in the chain: `seq` (gap-free), `prev_hash` and `row_hash` = SHA-256 over the row's content
    and `prev_hash`. The database refuses any other change, and every DELETE or TRUNCATE.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_entity_type_entity_id", "entity_type", "entity_id"),
        Index("ix_audit_log_unsealed", "id", postgresql_where=text("seq IS NULL")),
        # The log's filters by time and by action (the access review's PHI reads): migration 0017.
        Index("ix_audit_log_occurred_at", "occurred_at"),
        Index("ix_audit_log_action_occurred_at", "action", "occurred_at"),
        CheckConstraint(
            "(seq IS NULL) = (prev_hash IS NULL) AND (seq IS NULL) = (row_hash IS NULL)",
            name="sealed_whole",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    occurred_at: Mapped[datetime]
    actor_subject: Mapped[str] = mapped_column(String(255))
    actor_role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_address: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
