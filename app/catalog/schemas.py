from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas import Level, PriceCents, StrictInput

Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length=64)]
ProductName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=5000)]
# An RxNorm concept id (RxCUI): digits only.
RxNormCode = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,7}$")]
# A National Drug Code: 10 digits hyphenated 4-4-2, 5-3-2 or 5-4-1, or the 11-digit form
# (5-4-2, hyphenated or not).
NdcCode = Annotated[
    str,
    StringConstraints(
        pattern=r"^([0-9]{4}-[0-9]{4}-[0-9]{2}|[0-9]{5}-[0-9]{3}-[0-9]{2}"
        r"|[0-9]{5}-[0-9]{4}-[0-9]{1,2}|[0-9]{11})$"
    ),
]
CODE_FIELDS = ("rxnorm_code", "ndc_code", "pharmacy_id")


class ProductCreate(StrictInput):
    sku: Sku
    name: ProductName
    description: Description = ""
    price_cents: PriceCents
    par_level: Level = 0
    reorder_quantity: Level = 0
    requires_prescription: bool = Field(default=False, strict=True)
    perishable: bool = Field(default=False, strict=True)
    rxnorm_code: RxNormCode | None = Field(default=None, description="RxNorm concept (RxCUI)")
    ndc_code: NdcCode | None = Field(default=None, description="National Drug Code")
    pharmacy_id: uuid.UUID | None = Field(
        default=None, description="The pharmacy that fills it; null: the default pharmacy"
    )


class ProductUpdate(StrictInput):
    sku: Sku | None = None
    name: ProductName | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None
    par_level: Level | None = None
    reorder_quantity: Level | None = None
    requires_prescription: bool | None = Field(default=None, strict=True)
    perishable: bool | None = Field(default=None, strict=True)
    active: bool | None = Field(default=None, strict=True)
    rxnorm_code: RxNormCode | None = Field(default=None, description="null clears it")
    ndc_code: NdcCode | None = Field(default=None, description="null clears it")
    pharmacy_id: uuid.UUID | None = Field(
        default=None, description="null: filled by the default pharmacy"
    )


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    par_level: int
    reorder_quantity: int
    requires_prescription: bool
    perishable: bool
    active: bool
    rxnorm_code: str | None
    ndc_code: str | None
    pharmacy_id: uuid.UUID | None
    created_at: datetime
    quantity_available: int = Field(
        description="Sellable units: available, unexpired lots, minus reservations"
    )


class ProductRemoval(BaseModel):
    id: uuid.UUID
    outcome: Literal["deleted", "archived"] = Field(
        description="Products with lots are archived (kept for history), others deleted"
    )
