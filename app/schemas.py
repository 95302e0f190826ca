"""Pydantic building blocks shared by every domain's schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_QUANTITY = 1_000_000
MAX_PRICE_CENTS = 100_000_000  # one million dollars: far above any single item


class StrictInput(BaseModel):
    """Request bodies: unknown fields are an error, and numbers must really be integers."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul_character(cls, value: Any) -> Any:
        # PostgreSQL text cannot store U+0000: refuse it as a 422 here, not a 500 at the INSERT.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
Level = Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY)]
PriceCents = Annotated[int, Field(strict=True, ge=1, le=MAX_PRICE_CENTS)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=500)]
