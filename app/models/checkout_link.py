from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey


class CheckoutLink(UUIDPrimaryKey, CreatedAt, Base):
    """A patient's time-limited payment link. Only a hash of its token is stored."""

    __tablename__ = "checkout_links"

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # Date-of-birth checks that failed; at the limit the link locks.
    failed_attempts: Mapped[int] = mapped_column(server_default=text("0"))
    locked_at: Mapped[datetime | None]
    first_used_at: Mapped[datetime | None]
    issued_by: Mapped[str] = mapped_column(String(255))
