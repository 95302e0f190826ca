from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.catalog import create_product


@pytest.fixture
def product(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return create_product(client, admin, perishable=False)


@pytest.fixture
def perishable_product(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return create_product(client, admin, perishable=True)
