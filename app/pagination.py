"""Cursor (keyset) pagination: `?limit=&cursor=`, answered as `{items, next_cursor}`.

A cursor is the opaque, URL-safe encoding of the sort key of the last row returned.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from app.errors import PortalError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class InvalidCursor(PortalError):
    status = 400
    slug = "invalid-cursor"
    title = "The cursor is not valid"


T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: Any) -> str:
    raw = json.dumps([str(part) if part is not None else None for part in key])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(
    cursor: str, parts: int, *, parse: Sequence[Callable[[str], Any]] | None = None
) -> list[Any]:
    """The sort key inside `cursor`, each part converted by `parse` (strings when omitted).

    Anything this API did not issue - not base64 JSON, the wrong shape, a part that does not
    parse - is an `InvalidCursor` (400) here rather than a database error (500) later.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("The cursor was not issued by this API.") from exc
    if (
        not isinstance(key, list)
        or len(key) != parts
        # encode_cursor writes strings; PostgreSQL text cannot hold NUL.
        or not all(isinstance(part, str) and "\x00" not in part for part in key)
    ):
        raise InvalidCursor("The cursor was not issued by this API.")
    if parse is None:
        return key
    try:
        return [convert(part) for convert, part in zip(parse, key, strict=True)]
    except ValueError as exc:
        raise InvalidCursor("The cursor was not issued by this API.") from exc


# `parse` for the common (created_at, id) keyset.
CREATED_AT_AND_ID: tuple[Callable[[str], Any], ...] = (datetime.fromisoformat, uuid.UUID)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of the last page")]


def page_of(
    items: Sequence[T], rows: Sequence[R], limit: int, key: Callable[[R], tuple[Any, ...]]
) -> Page[T]:
    """A page of `items` (built from `rows`); a full page carries the cursor of its last row."""
    next_cursor = encode_cursor(*key(rows[-1])) if rows and len(rows) == limit else None
    return Page(items=list(items), next_cursor=next_cursor)
