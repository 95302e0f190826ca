"""The one keyset helper every list pages through: order, ties, cursors and the last page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models import AuditEntry, User
from app.pagination import InvalidCursor, Keyset, encode_cursor

T0 = datetime(2030, 1, 1, tzinfo=UTC)
# Three users share one creation instant, so only the id can order them.
OFFSETS = [timedelta(0), timedelta(0), timedelta(0), timedelta(seconds=1), timedelta(seconds=2)]


@pytest.fixture
def users(db: Session) -> list[User]:
    made = [
        User(email=f"keyset-{n}@example.org", role="doctor", created_at=T0 + offset)
        for n, offset in enumerate(OFFSETS)
    ]
    db.add_all(made)
    db.flush()
    return made


def only_these(users: list[User]) -> Select[User]:
    return select(User).where(User.id.in_([u.id for u in users]))


def walk(db: Session, keyset: Keyset, users: list[User], limit: int) -> list[list[uuid.UUID]]:
    pages: list[list[uuid.UUID]] = []
    cursor: str | None = None
    while True:
        page = keyset.scalars(db, only_these(users), limit=limit, cursor=cursor)
        pages.append([u.id for u in page.rows])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 10, "pagination does not terminate"


def test_ascending_pages_follow_the_key_with_ties_broken_by_id(
    db: Session, users: list[User]
) -> None:
    pages = walk(db, Keyset(User.created_at, User.id), users, limit=2)

    expected = [u.id for u in sorted(users, key=lambda u: (u.created_at, u.id))]
    assert [i for page in pages for i in page] == expected
    assert [len(page) for page in pages] == [2, 2, 1]


def test_descending_pages_follow_the_key_with_ties_broken_by_id(
    db: Session, users: list[User]
) -> None:
    pages = walk(db, Keyset(User.created_at, User.id, descending=True), users, limit=2)

    expected = [u.id for u in sorted(users, key=lambda u: (u.created_at, u.id), reverse=True)]
    assert [i for page in pages for i in page] == expected


def test_a_short_page_is_the_last_and_a_full_one_points_past_itself(
    db: Session, users: list[User]
) -> None:
    keyset = Keyset(User.created_at, User.id)

    short = keyset.scalars(db, only_these(users), limit=6, cursor=None)
    full = keyset.scalars(db, only_these(users), limit=5, cursor=None)
    after_full = keyset.scalars(db, only_these(users), limit=5, cursor=full.next_cursor)

    assert len(short.rows) == 5 and short.next_cursor is None
    assert len(full.rows) == 5 and full.next_cursor is not None
    assert after_full.rows == [] and after_full.next_cursor is None


def test_the_cursor_is_the_last_rows_key_as_lists_have_always_encoded_it(
    db: Session, users: list[User]
) -> None:
    page = Keyset(User.created_at, User.id).scalars(db, only_these(users), limit=2, cursor=None)

    last = page.rows[-1]
    assert page.next_cursor == encode_cursor(last.created_at.isoformat(), last.id)


def test_rows_returns_the_selected_columns_without_the_key(db: Session, users: list[User]) -> None:
    query = select(User.email).where(User.id.in_([u.id for u in users]))

    page = Keyset(User.created_at, User.id).rows(db, query, limit=10, cursor=None)

    ordered = sorted(users, key=lambda u: (u.created_at, u.id))
    assert page.rows == [(u.email,) for u in ordered]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 json!",
        encode_cursor("2030-01-01T00:00:00+00:00"),  # one part where two are expected
        encode_cursor("yesterday", "00000000-0000-4000-8000-000000000003"),  # not a timestamp
        encode_cursor("2030-01-01T00:00:00+00:00", "not-a-uuid"),
    ],
)
def test_a_cursor_this_key_did_not_issue_is_invalid(db: Session, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        Keyset(User.created_at, User.id).scalars(db, select(User), limit=2, cursor=cursor)


def test_an_integer_key_refuses_a_non_integer_cursor(db: Session) -> None:
    with pytest.raises(InvalidCursor):
        Keyset(AuditEntry.id).scalars(db, select(AuditEntry), limit=2, cursor=encode_cursor("x"))


def test_an_invalid_cursor_is_answered_400_invalid_cursor(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get(
        "/api/v1/users", params={"cursor": encode_cursor("x", "y")}, headers=admin
    )

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/invalid-cursor"
