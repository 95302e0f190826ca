from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey
from app.models.status import PharmacyExchangeOutcome, PharmacyOperation, one_of


class PharmacyLog(UUIDPrimaryKey, Base):
    """One HTTP exchange with a pharmacy, as its connector reported it.

    Headers are stored with secrets already removed by the connector (and checked again here);
    the bodies carry PHI (the patient's name, birth date, medications), so they are encrypted
    like PHI and read back only by admins, each read audited. Written once (key rotation
    re-seals the bodies), never deleted by the application.
    """

    __tablename__ = "pharmacy_logs"
    __table_args__ = (
        CheckConstraint(one_of("operation", PharmacyOperation), name="operation"),
        CheckConstraint(one_of("outcome", PharmacyExchangeOutcome), name="outcome"),
        Index("ix_pharmacy_logs_submission_id_at", "submission_id", "at"),
    )

    pharmacy_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    # Null for a connection test.
    submission_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pharmacy_submissions.id"))
    attempt: Mapped[int]
    operation: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(10))
    url: Mapped[str] = mapped_column(Text)
    request_headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    request_body_encrypted: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int | None]
    response_headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    response_body_encrypted: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float]
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
