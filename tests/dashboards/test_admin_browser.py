"""The staff portal in Debian's headless chromium, as an admin uses it: sign in through the
development identity provider's own form, open every admin page (screenshots at 1280 and 390 px
wide in test-artifacts/dashboards/), receive a lot, download a table as CSV and read it back,
sign out. A doctor who types an admin page's URL lands on their own page instead.

Every request the browser makes to a host other than loopback is refused and listed: the portal
needs nothing from the internet.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from dashboards.navigation import available
from tests.fixtures.browser import chromium
from tests.fixtures.portal_ui import (
    ADMIN_EMAIL,
    DOCTOR_EMAIL,
    PortalUiStack,
    sign_in,
    staff_token,
    wait_for_app,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright, chromium(playwright) as browser:
        yield browser


class Offline:
    def __init__(self, context: BrowserContext) -> None:
        self.blocked: list[str] = []
        context.route("**/*", self._only_loopback)

    def _only_loopback(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("internetdisconnected")


def open_page(page: Page, title: str) -> None:
    """Open a page from the menu (in the sidebar, shown at 1280 px)."""
    page.locator("[data-testid=stSidebarNav]").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=30_000)
    wait_for_app(page)


def shoot(page: Page, artifacts: Path, name: str) -> None:
    for label, size in (("1280", WIDE), ("390", PHONE)):
        page.set_viewport_size(size)
        wait_for_app(page)
        page.screenshot(path=str(artifacts / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(WIDE)


def test_admin_opens_every_page_receives_a_lot_and_downloads_its_csv(
    browser: Browser, portal_stack: PortalUiStack, artifacts: Path
) -> None:
    api = portal_stack.client(staff_token(portal_stack, "admin"))
    sku = f"BRW-{uuid.uuid4().hex[:6]}"
    product = api.post(
        "/products", json={"sku": sku, "name": "Alcohol prep pads (200)", "price_cents": 899}
    )
    assert product.status_code == 201, product.text

    context = browser.new_context(viewport=WIDE, accept_downloads=True)
    context.set_default_timeout(20_000)
    offline = Offline(context)
    page = context.new_page()
    sign_in(page, portal_stack, ADMIN_EMAIL)
    expect(page.get_by_text("Ada Admin")).to_be_visible()
    pages = available("admin")
    assert [p.title for p in pages][:1] == ["Overview"]
    for portal_page in pages:
        open_page(page, portal_page.title)
        assert page.url == f"{portal_stack.ui}/{portal_page.url_path}" or portal_page == pages[0]
        expect(page.get_by_text("Traceback")).to_have_count(0)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        shoot(page, artifacts, f"admin-{portal_page.url_path}")

    # Receive a lot of the new product.
    open_page(page, "Inventory")
    search = page.get_by_label("Search products (SKU or name)")
    search.fill(sku)
    search.press("Enter")
    wait_for_app(page)
    expect(page.get_by_text(f"Into Alcohol prep pads (200) ({sku})")).to_be_visible()
    wait_for_app(page)  # the rerun of the search has finished: no stale elements left
    lot_number = f"BRW-LOT-{uuid.uuid4().hex[:4]}"
    page.locator(".st-key-inv-receive-lot input").fill(lot_number)
    page.locator(".st-key-inv-receive-qty input").fill("24")
    page.get_by_role("button", name="Receive lot").click()
    expect(page.get_by_text(f"Received lot {lot_number}: 24 units")).to_be_visible()
    wait_for_app(page)
    lots = api.get(f"/products/{product.json()['id']}/lots").json()["items"]
    assert [(lot["lot_number"], lot["quantity_on_hand"]) for lot in lots] == [(lot_number, 24)]
    shoot(page, artifacts, "admin-inventory-received")

    # The lots table as CSV, exactly as shown.
    with page.expect_download() as download_info:
        page.locator(f".st-key-csv-lots-{sku.lower()} button").click()
    download = download_info.value
    assert download.suggested_filename.startswith(f"lots-{sku.lower()}-")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [(row["Lot"], row["Status"], row["On hand"]) for row in rows] == [
        (lot_number, "available", "24")
    ]

    page.get_by_role("button", name="Sign out").click()
    # The development provider's end-session page asks for a click (a real one redirects).
    page.get_by_role("button", name="End session").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=30_000)
    # Only the identity provider's own sign-in form asked for something outside (a stylesheet).
    assert all(url.endswith(".css") for url in offline.blocked), offline.blocked
    context.close()


def test_a_doctor_typing_an_admin_url_gets_their_own_page(
    browser: Browser, portal_stack: PortalUiStack, artifacts: Path
) -> None:
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(20_000)
    Offline(context)
    page = context.new_page()
    sign_in(page, portal_stack, DOCTOR_EMAIL)
    page.goto(f"{portal_stack.ui}/overview")
    wait_for_app(page)
    expect(page.get_by_role("button", name="Sign out")).to_be_attached()
    first_doctor_page = available("doctor")[0].title
    expect(page.get_by_role("heading", name=first_doctor_page, level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Overview")).to_have_count(0)
    expect(page.get_by_text("Gross revenue")).to_have_count(0)
    page.screenshot(path=str(artifacts / "doctor-typed-admin-url-390.png"), full_page=True)
    context.close()
