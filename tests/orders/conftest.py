from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.orders import create_product
from tests.fixtures.patients import Headers, Json, create_patient


@pytest.fixture
def patient(client: TestClient, doctor: Headers) -> Json:
    """A patient of `doctor` ("doctor-main")."""
    return create_patient(client, doctor)


@pytest.fixture
def product(client: TestClient, admin: Headers) -> Json:
    return create_product(client, admin, sku=f"A-{uuid.uuid4().hex[:8]}", price_cents=1299)
