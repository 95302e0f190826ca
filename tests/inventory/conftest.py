from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.catalog.factories import create_product
from tests.fixtures.database import TestDatabase


@pytest.fixture
def product(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return create_product(client, admin, perishable=False)


@pytest.fixture
def perishable_product(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return create_product(client, admin, perishable=True)


@pytest.fixture
def committed_db(app_engine: Engine, request: pytest.FixtureRequest) -> TestDatabase:
    """`fresh_db`, after closing the pooled connections earlier tests left on the template.

    `CREATE DATABASE ... TEMPLATE` refuses a template that has other sessions, and the
    session-wide `app_engine` keeps its connections to the template open between tests.
    """
    app_engine.dispose()
    database: TestDatabase = request.getfixturevalue("fresh_db")
    return database
