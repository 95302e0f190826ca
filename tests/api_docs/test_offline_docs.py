"""`/docs` works without internet: Swagger UI's script and styles come from the server itself.

The browser test opens `/docs` of a live API with every request to a host other than loopback
aborted and waits for the operations to be listed; the other tests read the page and the
assets it loads and find no address outside the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from tests.fixtures.browser import Offline
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import live_api

ANY_URL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
CSS_EXTERNAL = re.compile(r"(?:url\(\s*['\"]?|@import\s+['\"]?)(?:https?:)?//", re.IGNORECASE)


class AssetLinks(HTMLParser):
    """The addresses a page makes the browser load: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            value = values.get(name)
            if value and (tag != "a" or name != "href"):
                self.links.append(value)


def asset_links(html: str) -> list[str]:
    parser = AssetLinks()
    parser.feed(html)
    return parser.links


@pytest.fixture
def docs_server(fresh_db: TestDatabase, jwt_issuer: JwtIssuer, tmp_path: Path) -> Iterator[str]:
    settings = {
        "DATABASE_URL": fresh_db.app_url,
        "OIDC_ISSUER": jwt_issuer.url,
        "OIDC_AUDIENCE": AUDIENCE,
    }
    with live_api(settings, tmp_path / "api.log") as base:
        yield base


def test_docs_lists_the_operations_with_the_internet_blocked(
    offline: Offline, docs_server: str
) -> None:
    page = offline.context.new_page()
    response = page.goto(f"{docs_server}/docs")
    assert response is not None and response.status == 200
    products = page.locator('.opblock-get .opblock-summary-path[data-path="/api/v1/products"]')
    expect(products).to_be_visible(timeout=20_000)
    expect(
        page.locator(".opblock-post .opblock-summary-path[data-path='/api/v1/orders']")
    ).to_be_visible()
    assert offline.blocked == [], "the page tried to load from outside the machine"
    assert all(url.startswith(docs_server + "/") for url in offline.requested), offline.requested


def test_docs_page_and_its_assets_name_no_outside_address(client: TestClient) -> None:
    html = client.get("/docs")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert ANY_URL.findall(html.text) == []
    # Swagger UI's default validator badge would load an image from outside.
    assert '"validatorUrl": null' in html.text

    links = asset_links(html.text)
    assert any(link.endswith(".js") for link in links)
    assert any(link.endswith(".css") for link in links)
    for link in links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = client.get(link)
        assert asset.status_code == 200, link
        if link.endswith(".css"):
            assert CSS_EXTERNAL.findall(asset.text) == [], link

    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert ANY_URL.findall(redirect.text) == []
    assert asset_links(redirect.text) == []


def test_redoc_is_not_served(client: TestClient) -> None:
    """Only Swagger UI is offered; FastAPI's ReDoc page would load its script from a CDN."""
    assert client.get("/redoc").status_code == 404
