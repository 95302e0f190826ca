from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey


class Payment(UUIDPrimaryKey, CreatedAt, Base):
    """Mirror of one Stripe PaymentIntent for an order. No PHI: Stripe knows the order id only."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint(
            "refunded_cents >= 0 AND refunded_cents <= amount_cents", name="refund_within_amount"
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    stripe_payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    # A PaymentStatus: Stripe's, mirrored (Stripe owns the set, so no CHECK).
    status: Mapped[str] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(32))  # card | us_bank_account
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    refunded_cents: Mapped[int] = mapped_column(server_default=text("0"))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    disputed: Mapped[bool] = mapped_column(server_default=text("false"))
    # Refunded in full at Stripe after the order shipped: the order stays fulfilled (units cannot
    # be un-shipped) and staff follow it up.
    refunded_after_fulfilment: Mapped[bool] = mapped_column(server_default=text("false"))
    succeeded_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
