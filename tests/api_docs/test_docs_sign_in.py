"""Signing in from `/docs` through the development identity provider, as under `make run`.

The provider is started exactly as `portal up` starts it (`devtools.devstack`). Swagger UI runs the
authorization-code flow with PKCE (S256) for the portal's client: the provider's form in a
popup, the redirect back to `/docs/oauth2-redirect`, the code exchanged at the provider's token
endpoint from the page (cross-origin), and the access token sent to the API.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Request, expect

from devtools.identity import obtain_dev_token
from tests.fixtures.browser import Offline
from tests.fixtures.database import TestDatabase
from tests.fixtures.live_api import live_api

CLIENT_ID = "portal-dev"  # the portal's client under `make run`
DOCS_REDIRECT = "/docs/oauth2-redirect"


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@clinic.example.org"


def discovery(issuer: str) -> dict[str, Any]:
    document: dict[str, Any] = (
        httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=5).raise_for_status().json()
    )
    return document


def add_user(issuer: str, email: str, role: str) -> None:
    """What an administrator of the identity provider does: a person with a role claim."""
    httpx.put(
        f"{issuer}/users/{email}",
        json={"email": email, "email_verified": True, "role": role, "name": "Dr. Docs"},
        timeout=5,
    ).raise_for_status()


@pytest.fixture
def docs_server(fresh_db: TestDatabase, dev_provider: str, tmp_path: Path) -> Iterator[str]:
    """The API pointed at the development provider, the other OIDC settings as under
    `make run` (the defaults)."""
    settings = {"DATABASE_URL": fresh_db.app_url, "OIDC_ISSUER": dev_provider}
    with live_api(settings, tmp_path / "api.log") as base:
        yield base


def test_sign_in_from_docs_with_pkce_and_try_users_me(
    offline: Offline, docs_server: str, dev_provider: str
) -> None:
    email = unique_email("docs-doctor")
    add_user(dev_provider, email, "doctor")
    endpoints = discovery(dev_provider)
    token_requests: list[Request] = []

    def keep_token_request(request: Request) -> None:
        if request.url.split("?")[0] == endpoints["token_endpoint"] and request.method == "POST":
            token_requests.append(request)

    offline.context.on("request", keep_token_request)
    page = offline.context.new_page()
    page.goto(f"{docs_server}/docs")
    page.locator(".auth-wrapper .authorize").click()
    oauth = page.locator(".auth-container", has_text="authorizationCode")
    expect(oauth.locator("input[data-name=clientId]")).to_have_value(CLIENT_ID)

    with page.expect_popup() as popup_info:
        oauth.locator("button.authorize").click()
    popup = popup_info.value
    popup.locator("input[name=sub]").fill(email)
    with popup.expect_event("close"):
        popup.locator("input[name=sub]").press("Enter")

    expect(oauth.get_by_role("button", name="Remove authorization")).to_be_visible(timeout=20_000)
    page.locator(".modal-ux .btn-done").first.click()

    # The popup asked for a code with an S256 challenge, for the portal's client and /docs.
    authorize = next(
        url for url in offline.requested if url.startswith(endpoints["authorization_endpoint"])
    )
    query = parse_qs(urlsplit(authorize).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [docs_server + DOCS_REDIRECT]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    # The page exchanged the code with the matching verifier, as a public client.
    assert len(token_requests) == 1
    form = parse_qs(token_requests[0].post_data or "")
    verifier = form["code_verifier"][0]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"][0]
    assert "client_secret" not in form

    operation = page.locator(
        ".opblock-get", has=page.locator(".opblock-summary-path[data-path='/api/v1/users/me']")
    )
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    live = operation.locator(".live-responses-table .response")
    expect(live.locator(".response-col_status")).to_have_text("200", timeout=20_000)
    body = live.locator(".response-col_description .microlight").first
    expect(body).to_contain_text(email)
    expect(body).to_contain_text('"role": "doctor"')
    # Everything ran on loopback; only the provider's own form asked for an outside stylesheet.
    assert all(url.endswith(".css") for url in offline.blocked), offline.blocked


# -- PKCE at the provider, over HTTP ----------------------------------------------------------
def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_code(issuer: str, email: str, **params: str) -> httpx.Response:
    """Submit the provider's sign-in form for `email`; the answer redirects with the code."""
    state = secrets.token_urlsafe(8)
    return httpx.post(
        discovery(issuer)["authorization_endpoint"],
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": "http://127.0.0.1:8000" + DOCS_REDIRECT,
            "response_type": "code",
            "scope": "openid email profile",
            "state": state,
            **params,
        },
        data={"sub": email},
        timeout=5,
    )


def code_of(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert "code" in query, response.headers["location"]
    return query["code"][0]


def exchange(issuer: str, code: str, **extra: str) -> httpx.Response:
    """The token request of a public client (no secret), as Swagger UI sends it."""
    return httpx.post(
        discovery(issuer)["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "redirect_uri": "http://127.0.0.1:8000" + DOCS_REDIRECT,
            **extra,
        },
        timeout=5,
    )


def test_dev_provider_checks_the_pkce_verifier(dev_provider: str) -> None:
    email = unique_email("pkce")
    add_user(dev_provider, email, "doctor")
    verifier, challenge = pkce_pair()

    def fresh_code() -> str:
        return code_of(
            authorization_code(
                dev_provider, email, code_challenge=challenge, code_challenge_method="S256"
            )
        )

    missing = exchange(dev_provider, fresh_code())
    assert missing.status_code == 400, missing.text
    wrong = exchange(dev_provider, fresh_code(), code_verifier=pkce_pair()[0])
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"] == "invalid_grant"
    right = exchange(dev_provider, fresh_code(), code_verifier=verifier)
    assert right.status_code == 200, right.text
    token = right.json()["access_token"]
    userinfo = httpx.get(
        discovery(dev_provider)["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert userinfo.json()["email"] == email


def test_dev_provider_refuses_a_public_client_without_pkce(dev_provider: str) -> None:
    email = unique_email("no-pkce")
    add_user(dev_provider, email, "doctor")
    response = exchange(dev_provider, code_of(authorization_code(dev_provider, email)))
    assert response.status_code in (400, 401), response.text
    assert "access_token" not in response.text


def test_dev_provider_refuses_the_plain_challenge_method(dev_provider: str) -> None:
    email = unique_email("plain")
    add_user(dev_provider, email, "doctor")
    verifier, _ = pkce_pair()
    response = authorization_code(
        dev_provider, email, code_challenge=verifier, code_challenge_method="plain"
    )
    location = response.headers.get("location", "")
    assert "code=" not in location, location


def test_dev_provider_token_endpoint_allows_loopback_pages_only(dev_provider: str) -> None:
    token_endpoint = discovery(dev_provider)["token_endpoint"]

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            token_endpoint,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-requested-with",
            },
            timeout=5,
        )

    local = preflight("http://127.0.0.1:8000")
    assert local.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "POST" in local.headers["access-control-allow-methods"]
    assert "x-requested-with" in local.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in preflight("https://portal.example.org").headers


def test_dev_token_for_curl_still_works(dev_provider: str) -> None:
    """`portal dev-token` signs in as the confidential client, without PKCE."""
    body = obtain_dev_token(dev_provider, role="admin", email=unique_email("curl"))
    assert body["access_token"]
