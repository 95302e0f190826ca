from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from app.patients.schemas import DateOfBirth, PatientName, Phone
from app.schemas import EmailAddress, StrictInput, WholeNumber

SelfOrderQuantity = Annotated[int, Field(strict=True, ge=1, le=10), WholeNumber]


class PublicProduct(BaseModel):
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    in_stock: bool


class SelfOrderLine(StrictInput):
    product_id: uuid.UUID
    quantity: SelfOrderQuantity


class SelfOrderCreate(StrictInput):
    items: list[SelfOrderLine] = Field(min_length=1, max_length=10)
    name: PatientName
    email: EmailAddress
    phone: Phone
    date_of_birth: DateOfBirth


class SelfOrderCreated(BaseModel):
    order_id: uuid.UUID
    total_cents: int
    currency: str
    expires_at: datetime
    checkout_url: str
