from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey


class ReconciliationRun(UUIDPrimaryKey, Base):
    """One comparison of the portal's payments with Stripe's for the PaymentIntents created in
    [period_start, period_end), and what it found and repaired."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (CheckConstraint("period_start < period_end", name="period_ordered"),)

    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    actor_subject: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    intents_examined: Mapped[int] = mapped_column(server_default=text("0"))
    # Mismatches seen by this run, those seen for the first time, and those it repaired.
    exceptions_seen: Mapped[int] = mapped_column(server_default=text("0"))
    exceptions_new: Mapped[int] = mapped_column(server_default=text("0"))
    repaired: Mapped[int] = mapped_column(server_default=text("0"))
    # ReconciliationKind -> how many of that kind the run saw.
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # False where the Stripe API at hand cannot list disputes (the local stand-in): only the
    # charges' own `disputed` flags were compared.
    disputes_listed: Mapped[bool] = mapped_column(server_default=text("true"))
