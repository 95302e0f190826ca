from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.database import (
    TestDatabase,
    create_database,
    drop_database,
    migrate,
    migrations_one_at_a_time,
    server_url,
)
from tests.fixtures.identity import AUDIENCE, Auth, JwtIssuer
from tests.fixtures.stripe import LocalStripe, shared_server

os.environ.setdefault("ENVIRONMENT", "test")


@pytest.fixture(scope="session")
def jwt_issuer() -> Iterator[JwtIssuer]:
    issuer = JwtIssuer()
    yield issuer
    issuer.close()


@pytest.fixture(scope="session", autouse=True)
def _settings(jwt_issuer: JwtIssuer) -> Iterator[None]:
    """Point the app at the test issuer before anything reads the settings."""
    from app.config import get_settings
    from app.security import get_verifier

    os.environ["OIDC_ISSUER"] = jwt_issuer.url
    os.environ["OIDC_AUDIENCE"] = AUDIENCE
    # Audit anchors written by the `portal` commands tests run stay out of the working tree.
    anchors = tempfile.mkdtemp(prefix="portal-test-anchors-")
    os.environ["AUDIT_ANCHOR_DIR"] = anchors
    get_settings.cache_clear()
    get_verifier.cache_clear()
    yield
    get_settings.cache_clear()
    get_verifier.cache_clear()
    shutil.rmtree(anchors, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    yield from server_url()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[TestDatabase]:
    database = create_database(pg_server)
    migrate(database)
    yield database
    drop_database(pg_server, database.name)


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[TestDatabase]:
    """An empty database the test migrates itself (no other migration runs meanwhile)."""
    database = create_database(pg_server)
    with migrations_one_at_a_time(pg_server):
        yield database
    drop_database(pg_server, database.name)


@pytest.fixture(scope="session")
def app_engine(template_db: TestDatabase) -> Iterator[Engine]:
    from app.db import make_engine

    engine = make_engine(template_db.app_url, pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture
def db(app_engine: Engine) -> Iterator[Session]:
    """A session in a transaction that is rolled back after the test; commits become savepoints."""
    connection = app_engine.connect()
    transaction = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@pytest.fixture
def sessions(db: Session) -> sessionmaker[Session]:
    """Sessions for the worker's and the pipelines' flows on the test's connection: their
    commits are savepoints, so everything is still rolled back after the test."""
    return sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def fresh_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[TestDatabase]:
    """A database of its own, copied from the migrated template, for tests that commit.

    `CREATE DATABASE ... TEMPLATE` needs the template free of sessions, so the pooled
    connections of earlier tests are closed first.
    """
    app_engine.dispose()
    database = create_database(pg_server, template=template_db.name)
    yield database
    drop_database(pg_server, database.name)


@pytest.fixture
def app(db: Session) -> Any:
    from app.db import get_session
    from app.main import create_app
    from app.ratelimit import counter_transaction

    application = create_app()

    def session_override() -> Iterator[Session]:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    application.dependency_overrides[get_session] = session_override
    application.dependency_overrides[counter_transaction] = lambda: counting_on(db)
    return application


def counting_on(db: Session) -> Callable[[], AbstractContextManager[Connection]]:
    """Rate-limit hits counted in a savepoint of the test's own connection: outside the
    request's session (a failed request keeps them), rolled back with the test."""
    connection = db.get_bind()
    assert isinstance(connection, Connection)

    @contextmanager
    def savepoint() -> Iterator[Connection]:
        with connection.begin_nested():
            yield connection

    return savepoint


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def auth(jwt_issuer: JwtIssuer) -> Auth:
    """`auth("admin")` -> headers carrying a JWT access token for a user of that role."""

    def headers(
        role: str = "admin", *, sub: str | None = None, email: str | None = None
    ) -> dict[str, str]:
        sub = sub or f"{role}-{uuid.uuid4().hex[:8]}"
        token = jwt_issuer.token(sub, role=role, email=email or f"{sub}@clinic.test")
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def admin(auth: Auth) -> dict[str, str]:
    return auth("admin", sub="admin-main")


@pytest.fixture
def doctor(auth: Auth) -> dict[str, str]:
    return auth("doctor", sub="doctor-main")


@pytest.fixture(scope="session")
def localstripe(_settings: None) -> Iterator[LocalStripe]:
    """localstripe on 127.0.0.1 (a free port), one for the whole session and every package that
    uses it (each points the app at it with `app_pointed_at`); stopped at the end."""
    with shared_server() as server:
        yield server
