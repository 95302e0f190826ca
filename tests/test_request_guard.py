"""Refusals that happen before any handler runs, for every route at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit?entity_type=a%00b",
        "/api/v1/products?q=%00",
        "/api/v1/patients?cursor=x%00y",
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


def _chunks(body: bytes, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/healthz"), ("POST", "/problems/not-found"), ("PUT", "/docs")],
)
def test_a_body_over_the_page_limit_is_413_on_routes_outside_the_api(
    client: TestClient, method: str, path: str, chunked: bool
) -> None:
    """Outside /api/v1 (the patient pages' forms, meta routes) a body is small or refused."""
    body = b"x" * (get_settings().max_page_body_bytes + 1)

    response = client.request(method, path, content=_chunks(body) if chunked else body)

    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/payload-too-large"


def test_a_declared_body_over_the_limit_is_413_whatever_the_method(
    client: TestClient, admin: dict[str, str]
) -> None:
    too_long = str(get_settings().max_body_bytes + 1)
    response = client.request(
        "GET", "/api/v1/products", headers={**admin, "Content-Length": too_long}, content=b""
    )
    assert response.status_code == 413, response.text
    assert response.json()["type"] == "/problems/payload-too-large"
