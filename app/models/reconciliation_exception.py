from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey
from app.models.status import ReconciliationKind, one_of


class ReconciliationException(UUIDPrimaryKey, Base):
    """One way the portal's payments disagree with Stripe's, once per (kind, Stripe object).

    Reconciliation runs update `last_seen_at`; a missed webhook or refund is repaired with
    Stripe's state (`repaired_at`, `repair_event_id` in the webhook inbox); anything else waits
    for a person (`resolved_at`, with an encrypted note). No PHI: ids, amounts and statuses.
    """

    __tablename__ = "reconciliation_exceptions"
    __table_args__ = (
        CheckConstraint(one_of("kind", ReconciliationKind), name="kind"),
        UniqueConstraint("kind", "stripe_object_id"),
        Index("ix_reconciliation_exceptions_first_seen_at_id", "first_seen_at", "id"),
    )

    kind: Mapped[str] = mapped_column(String(32))
    # The PaymentIntent, refund or dispute the exception is about.
    stripe_object_id: Mapped[str] = mapped_column(String(255))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("payments.id"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    # The portal's amount and Stripe's, in cents, where the kind has amounts.
    expected_cents: Mapped[int | None]
    actual_cents: Mapped[int | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    first_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reconciliation_runs.id"))
    last_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reconciliation_runs.id"))
    repaired_at: Mapped[datetime | None]
    repair_event_id: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    # Free text from staff may hold anything: encrypted like PHI.
    resolution_note_encrypted: Mapped[str | None] = mapped_column(Text)
