from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import AlertTopic, one_of


class AlertSubscription(UUIDPrimaryKey, CreatedAt, Base):
    """A member of staff's wish to hear about one alert topic, by e-mail and/or SMS.

    The e-mail goes to the user's own address (`users.email`); the SMS number is personal data
    and is stored encrypted like PHI (app.phi), bound to this row and column.
    """

    __tablename__ = "alert_subscriptions"
    __table_args__ = (
        UniqueConstraint("user_id", "topic"),
        CheckConstraint(one_of("topic", AlertTopic), name="topic"),
        CheckConstraint("by_email OR sms_to_encrypted IS NOT NULL", name="some_channel"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(32))
    by_email: Mapped[bool] = mapped_column(server_default=text("true"))
    # Null: no SMS.
    sms_to_encrypted: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]
