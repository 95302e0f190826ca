"""Swagger UI at `/docs`, opened in Debian's headless chromium with every request that would
leave the machine blocked, and the development identity provider run as `portal up` runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Playwright, Route, sync_playwright

from devtools.devstack import identity_provider_argv
from tests.fixtures.browser import Offline
from tests.fixtures.live_api import free_port, stop, wait_until_up

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium. Missing is a failure, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium"
            " (`apt-get install chromium`)",
            pytrace=False,
        )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


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
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("dev-idp") / "provider.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            identity_provider_argv(port), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(
                process, issuer + "/.well-known/openid-configuration", log_path, timeout=30
            )
            yield issuer
        finally:
            stop(process, timeout=10)
