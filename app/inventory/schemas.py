from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from app.models.status import AdjustmentReason, LotStatus, StockMovementReason
from app.schemas import (
    LAST_DATE,
    MAX_QUANTITY,
    DateBounds,
    Note,
    Quantity,
    StrictInput,
    WholeNumber,
    days_from_today,
)

LotNumber = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$", max_length=64)
]

# Which direction each adjustment reason may move stock.
REASONS_THAT_REMOVE = {AdjustmentReason.DAMAGED, AdjustmentReason.EXPIRED}
REASONS_THAT_ADD = {AdjustmentReason.RETURNED}

ExpirationDate = Annotated[
    date, DateBounds(days_from_today(1), LAST_DATE, "expiration_date must be after today")
]


class LotReceive(StrictInput):
    lot_number: LotNumber
    expiration_date: ExpirationDate | None = Field(
        default=None,
        description="After today (UTC); required for a perishable product (omitted: 409)",
    )
    quantity: Quantity


class LotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    product_id: uuid.UUID
    lot_number: str
    expiration_date: date | None
    quantity_on_hand: int
    quantity_reserved: int
    quantity_available: int
    status: LotStatus
    status_reason: str | None
    created_at: datetime


class LotStatusChange(StrictInput):
    status: LotStatus
    reason: Note


def _not_zero(delta: int) -> int:
    if delta == 0:
        raise ValueError("delta must not be zero")
    return delta


def _when_reason(reasons: set[AdjustmentReason], then: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {
            "properties": {"reason": {"enum": sorted(r.value for r in reasons)}},
            "required": ["reason"],
        },
        "then": then,
    }


def _document_adjustment_rules(schema: dict[str, Any]) -> None:
    # The cross-field rules of `_direction_matches_reason`, in the schema clients are built from.
    schema["properties"]["delta"]["not"] = {"const": 0}
    schema["allOf"] = [
        _when_reason(REASONS_THAT_REMOVE, {"properties": {"delta": {"maximum": -1}}}),
        _when_reason(REASONS_THAT_ADD, {"properties": {"delta": {"minimum": 1}}}),
        _when_reason(
            {AdjustmentReason.OTHER},
            {"required": ["note"], "properties": {"note": {"type": "string"}}},
        ),
    ]


class StockAdjustment(StrictInput):
    """A counted correction: never zero; `damaged` and `expired` remove stock, `returned` adds
    it; `other` needs a note."""

    model_config = ConfigDict(json_schema_extra=_document_adjustment_rules)

    delta: Annotated[
        int,
        Field(strict=True, ge=-MAX_QUANTITY, le=MAX_QUANTITY),
        WholeNumber,
        AfterValidator(_not_zero),
    ]
    reason: AdjustmentReason
    note: Note | None = None

    @model_validator(mode="after")
    def _direction_matches_reason(self) -> StockAdjustment:
        if self.reason in REASONS_THAT_REMOVE and self.delta > 0:
            raise ValueError(f"an adjustment for reason '{self.reason}' must be negative")
        if self.reason in REASONS_THAT_ADD and self.delta < 0:
            raise ValueError(f"an adjustment for reason '{self.reason}' must be positive")
        if self.reason == AdjustmentReason.OTHER and not self.note:
            raise ValueError("a note is required when the reason is 'other'")
        return self


class StockMovementOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    lot_id: uuid.UUID
    delta_on_hand: int
    delta_reserved: int
    reason: StockMovementReason
    reason_code: AdjustmentReason | None
    note: str | None
    order_id: uuid.UUID | None
    actor_subject: str
    created_at: datetime


class LowStockItem(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    par_level: int
    reorder_quantity: int
    quantity_sellable: int
    quantity_on_hand: int
    quantity_reserved: int
    quantity_expiring_soon: int = Field(
        description="Sellable units in lots that expire within the requested number of days"
    )
    next_expiration_date: date | None
    suggested_order_quantity: int = Field(
        description="Enough to get back above par, rounded up to the reorder quantity"
    )
