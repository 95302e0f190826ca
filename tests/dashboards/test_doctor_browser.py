"""A doctor in a real browser (Debian's headless chromium): signs in through the development
identity provider's own form, opens every doctor page, places an order for a patient and gets
its payment link; screenshots of every page at 1280 and 390 px wide are kept in
test-artifacts/dashboards/."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.fixtures.browser import chromium
from tests.fixtures.portal_orders import answer, new_patient, stocked_product
from tests.fixtures.portal_ui import (
    ARTIFACTS,
    PortalUiStack,
    add_staff,
    new_email,
    sign_in,
    staff_token,
    wait_for_app,
)

# The doctor's pages by their URL path, with the title each one shows.
DOCTOR_PAGES = {
    "my-patients": "My patients",
    "new-order": "New order",
    "my-orders": "My orders",
    "doctor-inventory": "Inventory",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright, chromium(playwright) as launched:
        yield launched


def open_page(page: Page, stack: PortalUiStack, path: str) -> None:
    page.goto(f"{stack.ui}/{path}")
    expect(page.get_by_role("heading", name=DOCTOR_PAGES[path])).to_be_visible(timeout=30_000)
    wait_for_app(page)


def choose(page: Page, label: str, text: str, *, several: bool = False) -> None:
    """Pick the option containing `text` in Streamlit's select box (or multiselect) `label`."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()
    if several:
        page.keyboard.press("Escape")  # a multiselect stays open for more
    wait_for_app(page)


def test_a_doctor_signs_in_opens_every_page_and_places_an_order(
    browser: Browser, portal_stack: PortalUiStack
) -> None:
    email = new_email("dr-browser")
    add_staff(portal_stack.issuer, email, "doctor", name="Dr. Browser")
    with portal_stack.client(staff_token(portal_stack, "admin")) as admin:
        product = stocked_product(admin, quantity=4)
    with portal_stack.client(staff_token(portal_stack, "doctor", email)) as doctor_api:
        patient = new_patient(doctor_api)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        try:
            sign_in(page, portal_stack, email)
            expect(page.get_by_role("heading", name="My patients")).to_be_visible()
            # Data tables draw on a canvas; their cells are in the page for assistive technology.
            expect(page.locator("[role=gridcell]", has_text=patient["name"])).to_be_attached()

            open_page(page, portal_stack, "new-order")
            choose(page, "Patient", patient["name"])
            choose(page, "Items", product["sku"], several=True)
            page.screenshot(
                path=str(ARTIFACTS / "doctor-new-order-filled-1280.png"), full_page=True
            )
            expect(page.get_by_test_id("stMetricValue")).to_have_text("$12.50")
            page.get_by_role("button", name="Place the order").click()
            expect(page.get_by_text(re.compile(r"is placed for \$12\.50"))).to_be_visible()
            link = page.locator("[data-testid=stCode] code").inner_text().strip()
            assert link.startswith(f"{portal_stack.api}/pay/")
            (order,) = answer(doctor_api.get("/orders", params={"patient_id": patient["id"]}))[
                "items"
            ]
            assert (order["status"], order["total_cents"]) == ("pending", 1250)
            page.screenshot(path=str(ARTIFACTS / "doctor-order-placed-1280.png"), full_page=True)

            open_page(page, portal_stack, "my-orders")
            expect(
                page.locator("[role=gridcell]", has_text=order["id"][:8].upper())
            ).to_be_attached()

            for width in (1280, 390):
                page.set_viewport_size({"width": width, "height": 900 if width > 400 else 844})
                for path in DOCTOR_PAGES:
                    open_page(page, portal_stack, path)
                    page.screenshot(
                        path=str(ARTIFACTS / f"doctor-{path}-{width}.png"), full_page=True
                    )
                    # Nothing wider than the screen (tables scroll inside themselves).
                    wide = page.evaluate("document.documentElement.scrollWidth")
                    assert wide <= width, f"{path} is {wide} px wide at {width} px"
        finally:
            context.close()
    for width in (1280, 390):
        for path in DOCTOR_PAGES:
            assert (ARTIFACTS / f"doctor-{path}-{width}.png").stat().st_size > 10_000
