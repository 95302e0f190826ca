"""The OpenAPI document offers the issuer's sign-in next to the plain bearer token, and
Swagger UI is set up to run it as a public client with PKCE."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from app.main import create_app
from app.security import get_verifier
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.live_api import free_port

METHODS = {"get", "post", "put", "patch", "delete"}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def test_openapi_declares_the_issuers_authorization_code_flow(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "description": "OIDC access token",
        "scheme": "bearer",
    }
    flow = schemes["oidc"]["flows"]["authorizationCode"]
    assert schemes["oidc"]["type"] == "oauth2"
    assert flow["authorizationUrl"] == f"{jwt_issuer.url}/authorize"
    assert flow["tokenUrl"] == f"{jwt_issuer.url}/token"
    assert set(flow["scopes"]) == {"openid", "email", "profile"}

    protected = public = 0
    for method, path, operation in operations(document):
        security = operation.get("security")
        if security is None:
            public += 1
            continue
        protected += 1
        # Either scheme authorises the call (a list of requirements is a choice).
        assert security == [{"HTTPBearer": []}, {"oidc": []}], (method, path)
    assert protected > 20 and public > 0


def test_swagger_ui_signs_in_with_pkce_as_the_portals_client(client: TestClient) -> None:
    html = client.get("/docs").text
    found = re.search(r"ui\.initOAuth\((\{.*?\})\)", html, re.DOTALL)
    assert found, html
    init_oauth = json.loads(found.group(1))
    assert init_oauth["clientId"] == get_settings().oidc_client_id
    assert init_oauth["usePkceWithAuthorizationCodeGrant"] is True
    assert init_oauth["scopes"] == "openid email profile"
    assert "clientSecret" not in init_oauth
    assert "window.location.origin + '/docs/oauth2-redirect'" in html


def test_docs_client_id_can_be_a_public_client_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OIDC_DOCS_CLIENT_ID", "portal-docs-spa")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as client:
            html = client.get("/docs").text
    finally:
        monkeypatch.delenv("OIDC_DOCS_CLIENT_ID")
        get_settings.cache_clear()
    assert '"clientId": "portal-docs-spa"' in html


def test_document_is_served_while_the_issuer_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, jwt_issuer: JwtIssuer
) -> None:
    """Without discovery the flow's URLs are unknown: the bearer scheme alone, no error."""
    monkeypatch.setenv("OIDC_ISSUER", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    get_verifier.cache_clear()
    try:
        with TestClient(create_app()) as client:
            response = client.get("/openapi.json")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_verifier.cache_clear()
    assert response.status_code == 200
    schemes = response.json()["components"]["securitySchemes"]
    assert set(schemes) == {"HTTPBearer"}
    assert get_settings().oidc_issuer == jwt_issuer.url  # the next tests see the test issuer
