from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import OutboxStatus, one_of


class OutboxMessage(UUIDPrimaryKey, CreatedAt, Base):
    """An external call that must happen, written in the transaction that decided it.

    A worker claims due messages, performs the call outside any transaction, then records the
    outcome; failures retry with exponential backoff and jitter until `max_attempts`, then the
    message is dead-lettered for an admin to re-send. `dedupe_key` is unique, and receivers get
    it (Stripe idempotency key, e-mail Message-ID) so a repeated delivery changes nothing.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(one_of("status", OutboxStatus), name="status"),
        Index("ix_outbox_messages_status_next_attempt_at", "status", "next_attempt_at"),
    )

    topic: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # A claim: while in the future, another worker leaves the message alone.
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
