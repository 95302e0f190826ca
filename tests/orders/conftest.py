from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.fixtures.database import TestDatabase
from tests.orders.factories import create_product
from tests.patients.factories import Headers, Json, create_patient


@pytest.fixture
def patient(client: TestClient, doctor: Headers) -> Json:
    """A patient of `doctor` ("doctor-main")."""
    return create_patient(client, doctor)


@pytest.fixture
def product(client: TestClient, admin: Headers) -> Json:
    return create_product(client, admin, sku=f"A-{uuid.uuid4().hex[:8]}", price_cents=1299)


@pytest.fixture
def committed_db(app_engine: Engine, request: pytest.FixtureRequest) -> Any:
    """`fresh_db`, after closing the pooled connections earlier tests left on the template
    (`CREATE DATABASE ... TEMPLATE` refuses a template that has other sessions)."""
    app_engine.dispose()
    database: TestDatabase = request.getfixturevalue("fresh_db")
    return database
