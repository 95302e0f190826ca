from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import PharmacySubmissionStatus, one_of


class PharmacySubmission(UUIDPrimaryKey, CreatedAt, Base):
    """An order's prescription items for one pharmacy: an outbox row written when the order is
    paid, delivered by app/pharmacy/flows.py, then following what the pharmacy does with it.

    `pharmacy_id` is null when no pharmacy was configured at payment time: the submission is
    dead-lettered with that reason (and an alert) until an admin configures one and re-sends.
    `claim_token` names the worker's current claim; `claimed_until` is its lease: a `sending`
    row whose lease lapsed (its worker died) is claimed again.
    """

    __tablename__ = "pharmacy_submissions"
    __table_args__ = (
        CheckConstraint(one_of("status", PharmacySubmissionStatus), name="status"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index("ix_pharmacy_submissions_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_pharmacy_submissions_status_created_at_id", "status", "created_at", "id"),
        Index("ix_pharmacy_submissions_created_at_id", "created_at", "id"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    pharmacy_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    # The order items this submission carries (a paid order's items no longer change).
    order_item_ids: Mapped[list[str]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(
        String(16), server_default=PharmacySubmissionStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[uuid.UUID | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(200))
    # What the pharmacy reported as dispensed (quantities, dates, medication codes; no PHI).
    dispense: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The order was cancelled without telling the pharmacy at once: the status poll tells it.
    cancel_requested_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    dispensed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    last_polled_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
