"""Pydantic building blocks shared by every domain's schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_QUANTITY = 1_000_000
MAX_PRICE_CENTS = 100_000_000  # one million dollars: far above any single item


class StrictInput(BaseModel):
    """Request bodies: unknown fields are an error, and numbers must really be integers."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
Level = Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY)]
PriceCents = Annotated[int, Field(strict=True, ge=1, le=MAX_PRICE_CENTS)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=500)]
