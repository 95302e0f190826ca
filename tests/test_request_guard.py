"""Refusals that happen before any handler runs, for every route at once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit?entity_type=a%00b",
        "/api/v1/products?q=%00",
        "/api/v1/patients?email=x%00@example.com",
    ],
)
def test_a_nul_character_in_the_query_is_a_clear_400(
    client: TestClient, admin: dict[str, str], url: str
) -> None:
    response = client.get(url, headers=admin)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "NUL" in response.json()["detail"]


def test_every_response_carries_a_request_id_and_echoes_the_callers(client: TestClient) -> None:
    generated = client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
