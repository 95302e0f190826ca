"""Cursor (keyset) pagination: `?limit=&cursor=`, answered as `{items, next_cursor}`.

A cursor is the opaque, URL-safe encoding of the sort key of the last row returned. Every list
query pages through one `Keyset`, which owns the ORDER BY, the "after the cursor" WHERE, the
LIMIT and the cursor of the next page, so no list writes its own.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

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


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of the last page")]


def _parser(column: InstrumentedAttribute[Any]) -> Callable[[str], Any]:
    """How a cursor part becomes a value of the column's Python type."""
    python_type = column.type.python_type
    if python_type is datetime:
        return datetime.fromisoformat
    if python_type in (uuid.UUID, int, str):
        return python_type  # type: ignore[no-any-return]
    raise TypeError(f"no cursor encoding for {column} ({python_type.__name__})")


def _cursor_part(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class KeysetPage(Generic[T]):
    """The rows of one page and the cursor of the next (None when this page is not full)."""

    rows: list[T]
    next_cursor: str | None

    def map(self, convert: Callable[[T], R]) -> KeysetPage[R]:
        return KeysetPage([convert(row) for row in self.rows], self.next_cursor)

    def page(self) -> Page[T]:
        return Page(items=self.rows, next_cursor=self.next_cursor)


class Keyset:
    """The sort key of a list: `columns` compared as one tuple, all ascending or all descending.

    The last column must be unique (an id or a sequence number), so rows that tie on the
    others are still in one total order and no row is returned twice or skipped across pages.
    A full page carries the cursor of its last row; a shorter page is the last one.
    """

    def __init__(self, *columns: InstrumentedAttribute[Any], descending: bool = False) -> None:
        self.columns = columns
        self.descending = descending
        self._parse = tuple(_parser(column) for column in columns)

    def after(self, cursor: str) -> ColumnElement[bool]:
        """Rows that come after the row `cursor` names (`InvalidCursor` if it names none)."""
        values = decode_cursor(cursor, len(self.columns), parse=self._parse)
        if len(self.columns) == 1:
            (column,), (value,) = self.columns, values
            single: ColumnElement[bool] = column < value if self.descending else column > value
            return single
        key = tuple_(*self.columns)
        return key < tuple(values) if self.descending else key > tuple(values)

    def cursor_of(self, key: Sequence[Any]) -> str:
        return encode_cursor(*(_cursor_part(value) for value in key))

    def rows(
        self,
        session: Session,
        query: Select[*tuple[Any, ...]],
        *,
        limit: int,
        cursor: str | None,
    ) -> KeysetPage[tuple[Any, ...]]:
        """One page of `query`'s rows (as tuples), in keyset order after `cursor`.

        The key columns are selected alongside the caller's, so the next cursor is always
        exactly the sort key of the last row, whatever the query selects.
        """
        width = len(self.columns)
        query = (
            query.add_columns(*self.columns)
            .order_by(*(column.desc() if self.descending else column for column in self.columns))
            .limit(limit)
        )
        if cursor:
            query = query.where(self.after(cursor))
        rows = session.execute(query).all()
        next_cursor = self.cursor_of(rows[-1][-width:]) if rows and len(rows) == limit else None
        return KeysetPage([tuple(row[:-width]) for row in rows], next_cursor)

    def scalars(
        self, session: Session, query: Select[T], *, limit: int, cursor: str | None
    ) -> KeysetPage[T]:
        """One page of a single-entity query (`select(Model)`), in keyset order after `cursor`."""
        return self.rows(session, query, limit=limit, cursor=cursor).map(lambda row: row[0])
