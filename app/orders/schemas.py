from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.models.status import (
    CancellationReason,
    OrderEvent,
    OrderStatus,
    PharmacySubmissionStatus,
)
from app.pharmacy.schemas import OrderPharmacyOut
from app.schemas import Quantity, StrictInput

OrderNote = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
DosageText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class OrderLine(StrictInput):
    product_id: uuid.UUID
    quantity: Quantity
    dosage_text: DosageText | None = Field(
        default=None,
        description="Directions for a prescription product (the sig), sent to the pharmacy;"
        " stored encrypted. Refused for other products. Without it the pharmacy is told"
        " 'Use as directed.'",
    )


class OrderCreate(StrictInput):
    patient_id: uuid.UUID
    items: list[OrderLine] = Field(min_length=1, max_length=50)
    note: OrderNote | None = None


class OrderEdit(StrictInput):
    items: list[OrderLine] = Field(min_length=1, max_length=50)


# The CancellationReason codes staff may give (all but SYSTEM_CANCELLATION_REASONS, which the
# system sets); a Literal so that the document lists them. tests/test_status_constraints.py
# checks the two agree.
StaffCancellationReason = Literal[
    "patient_request",
    "prescriber_change",
    "duplicate_order",
    "entered_in_error",
    "out_of_stock",
    "other",
]


class OrderCancel(StrictInput):
    reason: StaffCancellationReason = Field(
        description="Why, as a code (kept in clear and in the audit log)"
    )
    note: OrderNote | None = Field(
        default=None,
        description="Optional details; may hold health information, so stored encrypted and "
        "never written to the audit log",
    )


class AllocationOut(BaseModel):
    lot_id: uuid.UUID
    lot_number: str
    expiration_date: date | None
    quantity: int


class OrderItemOut(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    dosage_text: str | None = Field(description="The sig of a prescription item")
    allocations: list[AllocationOut]


class OrderOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID | None
    status: OrderStatus
    total_cents: int
    currency: str
    note: str | None
    items: list[OrderItemOut]
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancellation_reason: CancellationReason | None
    cancellation_note: str | None
    pharmacy: list[OrderPharmacyOut] = Field(
        default_factory=list,
        description="What each pharmacy filling the order's prescriptions did with them (the"
        " history of each change is in the order's audit log, `order.pharmacy_*`)",
    )


class OrderCreated(OrderOut):
    checkout_url: str = Field(description="The patient's payment link; shown only this once")


class CheckoutLinkOut(BaseModel):
    order_id: uuid.UUID
    checkout_url: str
    expires_at: datetime


class OrderSummary(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID | None
    status: OrderStatus
    total_cents: int
    currency: str
    created_at: datetime
    expires_at: datetime
    payment_status: str | None = Field(
        default=None, description="Stripe's status of the order's latest payment (none yet: null)"
    )
    refunded_cents: int = Field(default=0, description="Refunded of the order's payments")
    disputed: bool = Field(default=False, description="A payment of the order is disputed")
    pharmacy_statuses: list[PharmacySubmissionStatus] = Field(
        default_factory=list,
        description="Where each of the order's prescription submissions stands (oldest first)",
    )


# An order's reference as patients see it: the first 8 characters of its id.
OrderReference = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8}$")]


class TimelineEntry(BaseModel):
    at: datetime
    event: OrderEvent
    summary: str = Field(description="The milestone in plain words (no personal details)")
    actor_role: str = Field(
        description="Who caused it: admin, doctor, system or checkout-link (the patient)"
    )
    facts: dict[str, str | int | bool | None] = Field(
        description="The milestone's figures and codes: amounts in cents, statuses, reasons,"
        " the pharmacy's name, a link e-mail's delivery"
    )


class OrderTimeline(BaseModel):
    order_id: uuid.UUID
    status: OrderStatus
    events: list[TimelineEntry] = Field(description="Oldest first")
