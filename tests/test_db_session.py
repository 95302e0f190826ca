"""The request's session (`app.db.get_session`, not overridden here): it commits when the
endpoint returns, rolls back when it raises, fails the request when the commit fails, and always
gives its connection back to the pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app import db as portal_db
from app.db import DbSession, make_engine
from app.models import Product
from tests.fixtures.database import TestDatabase


@pytest.fixture
def engine(fresh_db: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    engine = make_engine(fresh_db.app_url, pool_size=2)
    factory = sessionmaker(engine, expire_on_commit=False)
    monkeypatch.setattr(portal_db, "session_factory", lambda: factory)
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    application = FastAPI()

    @application.post("/products/{sku}")
    def add(sku: str, session: DbSession, fail: bool = False) -> dict[str, str]:
        session.add(Product(sku=sku, name="Gauze", price_cents=100))
        session.flush()
        if fail:
            raise RuntimeError("the endpoint failed after writing")
        return {"sku": sku}

    @application.post("/unflushed/{sku}")
    def add_unflushed(sku: str, session: DbSession) -> dict[str, str]:
        session.add(Product(sku=sku, name="Gauze", price_cents=100))  # written by the commit
        return {"sku": sku}

    with TestClient(application, raise_server_exceptions=False) as test_client:
        yield test_client


def _skus(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Product.sku).order_by(Product.sku)))


def _checked_out(engine: Engine) -> int:
    return engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


def test_a_returning_endpoint_is_committed(client: TestClient, engine: Engine) -> None:
    assert client.post("/products/S-1").status_code == 200
    assert _skus(engine) == ["S-1"]
    assert _checked_out(engine) == 0


def test_a_failing_endpoint_writes_nothing(client: TestClient, engine: Engine) -> None:
    assert client.post("/products/S-2", params={"fail": True}).status_code == 500
    assert _skus(engine) == []
    assert _checked_out(engine) == 0


def test_a_failing_commit_fails_the_request(client: TestClient, engine: Engine) -> None:
    assert client.post("/unflushed/S-3").status_code == 200
    # The duplicate is only sent at commit, after the endpoint returned: the client must not
    # get a 200 for a write that did not happen.
    assert client.post("/unflushed/S-3").status_code == 500
    assert _skus(engine) == ["S-3"]
    assert _checked_out(engine) == 0
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Product)) == 1
