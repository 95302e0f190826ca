"""Pydantic building blocks shared by every domain's schemas.

Each rule a request is validated against is also in its JSON schema (the OpenAPI document), so a
client generated from the document sends only what the API accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

MAX_QUANTITY = 1_000_000
MAX_PRICE_CENTS = 100_000_000  # one million dollars: far above any single item
# The largest order total accepted (ten million dollars), within PostgreSQL's `integer` column.
MAX_ORDER_TOTAL_CENTS = 1_000_000_000


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


def _integral_number(value: Any) -> Any:
    # JSON Schema's `integer` includes `3.0`; strings and fractions stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# JSON Schema's `integer` includes `3.0`, so it is accepted as 3; `"3"`, `3.5` and `true` are not.
WholeNumber = BeforeValidator(_integral_number)
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY), WholeNumber]
Level = Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY), WholeNumber]
PriceCents = Annotated[int, Field(strict=True, ge=1, le=MAX_PRICE_CENTS), WholeNumber]
Note = Annotated[str, StringConstraints(min_length=1, max_length=500)]

# What the API accepts as an e-mail address, as a pattern the document can carry: a dot-atom
# local part and a domain of letters, digits and hyphens ending in an alphabetic top-level label.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9_'+-]+(\.[A-Za-z0-9_'+-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def _local_part_fits(value: str) -> str:
    # RFC 5321's limit, which the document's `format: email` carries.
    if len(value.rpartition("@")[0]) > 64:
        raise ValueError("the part before the @ must be at most 64 characters")
    return value


EmailAddress = Annotated[
    str,
    StringConstraints(max_length=254, pattern=EMAIL_PATTERN),
    AfterValidator(_local_part_fits),
    Field(json_schema_extra={"format": "email"}),
]


def utc_today() -> date:
    return datetime.now(UTC).date()


# --- dates bounded by today ------------------------------------------------------------------
# JSON Schema has no bounds for dates, so a bounded date is documented by a pattern that lists
# exactly the allowed days (built when the document is built; `format: date` rules out 02-30).
ANY_MONTH = "(0[1-9]|1[0-2])"
ANY_DAY = "(0[1-9]|[12][0-9]|3[01])"


def _digit_ranges(low: str, high: str) -> list[str]:
    """Regex pieces matching every number from `low` to `high` (equal-width digit strings)."""
    if low == high:
        return [low]
    rest = len(low) - 1
    if low[0] == high[0]:
        return [low[0] + piece for piece in _digit_ranges(low[1:], high[1:])]
    pieces: list[str] = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        pieces.extend(low[0] + piece for piece in _digit_ranges(low[1:], "9" * rest))
        first += 1
    high_is_full = high[1:] == "9" * rest
    if not high_is_full:
        last -= 1
    if first <= last:
        digits = str(first) if first == last else f"[{first}-{last}]"
        pieces.append(digits + "[0-9]" * rest)
    if not high_is_full:
        pieces.extend(high[0] + piece for piece in _digit_ranges("0" * rest, high[1:]))
    return pieces


def _number_range(low: int, high: int, width: int) -> str:
    return "(" + "|".join(_digit_ranges(f"{low:0{width}d}", f"{high:0{width}d}")) + ")"


def _within_year(year: int, start: tuple[int, int], end: tuple[int, int]) -> list[str]:
    (first_month, first_day), (last_month, last_day) = start, end
    prefix = f"{year:04d}-"
    if first_month == last_month:
        return [f"{prefix}{first_month:02d}-{_number_range(first_day, last_day, 2)}"]
    pieces = [f"{prefix}{first_month:02d}-{_number_range(first_day, 31, 2)}"]
    if last_month - first_month > 1:
        pieces.append(f"{prefix}{_number_range(first_month + 1, last_month - 1, 2)}-{ANY_DAY}")
    pieces.append(f"{prefix}{last_month:02d}-{_number_range(1, last_day, 2)}")
    return pieces


def date_range_pattern(earliest: date, latest: date) -> str:
    """A pattern matching the ISO dates from `earliest` to `latest`, both included."""
    start, end = (earliest.month, earliest.day), (latest.month, latest.day)
    if earliest.year == latest.year:
        pieces = _within_year(earliest.year, start, end)
    else:
        pieces = _within_year(earliest.year, start, (12, 31))
        if latest.year - earliest.year > 1:
            years = _number_range(earliest.year + 1, latest.year - 1, 4)
            pieces.append(f"{years}-{ANY_MONTH}-{ANY_DAY}")
        pieces.extend(_within_year(latest.year, (1, 1), end))
    return "^(" + "|".join(pieces) + ")$"


DateBound = date | Callable[[date], date]


@dataclass(frozen=True)
class DateBounds:
    """`Annotated[date, DateBounds(...)]`: a date between two bounds, each a date or a function
    of today (UTC), evaluated for each request and each document. `rule` is the 422 message."""

    earliest: DateBound
    latest: DateBound
    rule: str

    def bounds(self) -> tuple[date, date]:
        today = utc_today()
        low = self.earliest(today) if callable(self.earliest) else self.earliest
        high = self.latest(today) if callable(self.latest) else self.latest
        return low, high

    def _check(self, value: date) -> date:
        low, high = self.bounds()
        if not low <= value <= high:
            raise ValueError(self.rule)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = date_range_pattern(*self.bounds())
        json_schema.setdefault("description", self.rule)
        return json_schema


def days_from_today(days: int) -> Callable[[date], date]:
    def bound(today: date) -> date:
        return today + timedelta(days=days)

    return bound


# Ten thousand years minus a day: the last date ISO 8601's four-digit years can write.
LAST_DATE = date(9999, 12, 31)
