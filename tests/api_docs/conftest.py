"""Swagger UI at `/docs`, opened in Debian's headless chromium with every request that would
leave the machine blocked, and the development identity provider run as `portal up` runs it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Playwright, Route, sync_playwright

from devtools.devstack import identity_provider_argv
from tests.fixtures.browser import Offline, chromium
from tests.fixtures.live_api import identity_provider

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    with chromium(playwright) as browser:
        yield browser


@pytest.fixture
def offline(browser: Browser) -> Iterator[Offline]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    offline = Offline(context)

    def only_loopback(route: Route) -> None:
        url = route.request.url
        offline.requested.append(url)
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            offline.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    yield offline
    context.close()


@pytest.fixture(scope="module")
def dev_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The development identity provider started exactly as `portal up` starts it."""
    with identity_provider(identity_provider_argv, tmp_path_factory.mktemp("dev-idp")) as issuer:
        yield issuer
