from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class PaymentRefund(CreatedAt, Base):
    """One Stripe refund of a payment, keyed by Stripe's refund id.

    A refund's events (`refund.created`, `refund.updated`, `charge.refunded`...) arrive in any
    order and may repeat; keying by the refund id counts each refund once, whoever made it (the
    portal's worker or someone in the Stripe Dashboard).
    """

    __tablename__ = "payment_refunds"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="amount_positive"),)

    stripe_refund_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), index=True)
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    # A RefundStatus: Stripe's, mirrored (Stripe owns the set, so no CHECK).
    status: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime | None]
