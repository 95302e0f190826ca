"""Cursor (keyset) pagination: `?limit=&cursor=`, answered as `{items, next_cursor}`.

A cursor is the opaque, URL-safe encoding of the sort key of the last row returned.
"""

from __future__ import annotations

import base64
import json
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


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: Any) -> str:
    raw = json.dumps([str(part) if part is not None else None for part in key])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str | None]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("The cursor was not issued by this API.") from exc
    if not isinstance(key, list) or len(key) != parts:
        raise InvalidCursor("The cursor was not issued by this API.")
    return key


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of the last page")]
