"""Engine, session dependency and the `DbSession` alias.

The request's session commits when the endpoint returns without error and rolls back otherwise;
services only flush.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


def sqlalchemy_url(url: str) -> str:
    """Accept libpq-style URLs (`postgresql://...`) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("database URL must start with postgresql://")


def with_user(url: str, user: str, password: str | None = None) -> str:
    """The same server and database, as another role (trust or peer auth in development)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    auth = user if password is None else f"{user}:{password}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Errors and logs show SQL without its parameters, which can be patients' details.
        hide_parameters=True,
        connect_args={"application_name": "portal"},
    )


def get_engine() -> Engine:
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set (use `portal up` for the embedded server)")
        _engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def session_factory() -> sessionmaker[Session]:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def get_session() -> AsyncIterator[Session]:
    """The request's session. Opening it does no I/O, so it happens on the event loop; the
    commit (or the rollback after an error) and the close run in one threadpool hand-off."""
    session = session_factory()()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_end, session, commit=False)
        raise
    await run_in_threadpool(_end, session, commit=True)


# Requests per process that may hold a session at once; the rest wait without a thread. It must
# stay below the threadpool's 40 threads: the commit needs a thread of that pool while the
# transaction (and its row locks) is still open, so if every thread were held by a request
# blocked on those locks, the lock holder could never commit.
MAX_CONCURRENT_SESSIONS = 20

# scope="function": commit before the response is sent, so a 2xx means the write is durable.
DbSession = Annotated[
    Session, Depends(get_session, scope="function", max_concurrency=MAX_CONCURRENT_SESSIONS)
]
