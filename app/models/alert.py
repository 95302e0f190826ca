from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey
from app.models.status import AlertTopic, one_of


class Alert(UUIDPrimaryKey, Base):
    """A condition staff are told about: opened once when it starts, cleared when it ends.

    At most one alert per (topic, key) is open at a time (a partial unique index), so sweeps
    that overlap cannot open a condition twice; one that comes back after clearing is a new
    row. The summary and details hold products, SKUs, lots, counts and dates, never PHI.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(one_of("topic", AlertTopic), name="topic"),
        CheckConstraint("cleared_at IS NULL OR cleared_at >= opened_at", name="cleared_after_open"),
        Index(
            "uq_alerts_topic_key_open",
            "topic",
            "key",
            unique=True,
            postgresql_where=text("cleared_at IS NULL"),
        ),
        # The admin list, newest first, with or without a topic.
        Index("ix_alerts_opened_at_id", "opened_at", "id"),
        Index("ix_alerts_topic_opened_at_id", "topic", "opened_at", "id"),
    )

    topic: Mapped[str] = mapped_column(String(32))
    # Stable per condition, e.g. `low-stock:<product id>`.
    key: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(300))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    opened_at: Mapped[datetime] = mapped_column(server_default=func.now())
    cleared_at: Mapped[datetime | None]
