"""The patient's storefront end to end, in Debian's headless Chromium at 390 px.

One live API (uvicorn on a committed database copy, localstripe for Stripe, its Card Element
on the payment page) serves the module. A patient browses the shop, cannot add a product out of
stock, fills the cart, gives bad details (errors shown, nothing placed) and then good ones, pays
by card through localstripe, sees the confirmation; `portal worker --once` e-mails the receipt
to a loopback SMTP sink; the patient asks for their "my orders" link, which the worker e-mails
too, and the link shows the order paid. axe-core (from the npm registry, tests/fixtures/axe.py)
checks every page for serious or critical violations.

TEST DOUBLE, browser side only: Stripe.js's `confirmCardPayment`, which localstripe's stand-in
cannot perform for the portal's intents (see tests/fixtures/stripe_js.py). Everything on the
server side goes to localstripe over HTTP.

Screenshots of every page go to test-artifacts/shop/ (git-ignored).
"""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from playwright.sync_api import expect as playwright_expect
from sqlalchemy import Engine, func, select

from app.db import make_engine
from app.models import Order
from devtools.mail_sink import MailSink
from tests.checkout.live_server import (
    PROJECT_ROOT,
    Stack,
    deliver_outbox,
    ok,
    running_stack,
    wait_for,
)
from tests.fixtures.axe import axe_source, violations
from tests.fixtures.browser import chromium
from tests.fixtures.database import TestDatabase, create_database, drop_database
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.stripe import LocalStripe
from tests.fixtures.stripe_js import STRIPE_JS_TEST_DOUBLE, confirm_card_payment, fill_card

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "shop"
PHONE_390 = {
    "viewport": {"width": 390, "height": 844},
    "user_agent": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    ),
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
PATIENT = {
    "name": "Avery Storefront",
    "phone": "+1 555 010 0190",
    "date_of_birth": "1979-11-23",
}


@pytest.fixture(scope="module")
def shop_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[TestDatabase]:
    app_engine.dispose()  # the template must be free of sessions to be copied
    database = create_database(pg_server, template=template_db.name)
    yield database
    drop_database(pg_server, database.name)


@pytest.fixture(scope="module")
def stack(
    shop_db: TestDatabase,
    jwt_issuer: JwtIssuer,
    localstripe: LocalStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    log = tmp_path_factory.mktemp("shop-api") / "uvicorn.log"
    with running_stack(shop_db, jwt_issuer, localstripe, log) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    playwright: Playwright
    with sync_playwright() as playwright, chromium(playwright) as browser:
        yield browser


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


@pytest.fixture
def phone(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    context = browser.new_context(**PHONE_390)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    context.expose_function(
        "stripeTestDoubleConfirmCardPayment", confirm_card_payment(stack.stripe)
    )
    context.add_init_script(STRIPE_JS_TEST_DOUBLE)
    yield context
    context.close()


def check(page: Page, axe: str, name: str) -> None:
    """Screenshot the page, then fail on any serious or critical accessibility violation and on
    anything wider than the phone."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
    found = violations(page, axe)
    assert found == [], f"{name}: {found}"


def stock(stack: Stack, name: str, price_cents: int, units: int) -> dict[str, Any]:
    product = ok(
        stack.api.post(
            "/products",
            json={"sku": f"SHOP-{uuid.uuid4().hex[:8]}", "name": name, "price_cents": price_cents},
            headers=stack.admin,
        ),
        201,
    )
    if units:
        lot = {"lot_number": f"SHOP-{uuid.uuid4().hex[:6]}", "quantity": units}
        ok(stack.api.post(f"/products/{product['id']}/lots", json=lot, headers=stack.admin), 201)
    return product


def order_count(stack: Stack) -> int:
    engine = make_engine(stack.database.owner_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Order.__table__)) or 0)
    finally:
        engine.dispose()


def delivered_mail(stack: Stack, tmp_path: Path) -> list[EmailMessage]:
    with MailSink(tmp_path / f"mail-{uuid.uuid4().hex[:6]}") as sink:
        deliver_outbox(stack, sink.port, tmp_path)
        return [
            email.message_from_bytes(m.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for m in sink.messages()
        ]


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def test_a_patient_shops_pays_by_card_and_follows_the_order_from_an_emailed_link(
    stack: Stack, phone: BrowserContext, axe: str, tmp_path: Path
) -> None:
    stock(stack, "Glucose test strips (50)", 1850, 20)
    stock(stack, "Blood pressure cuff", 3999, 0)
    email_address = f"avery.{uuid.uuid4().hex[:6]}@example.com"
    page = phone.new_page()

    # Shop: prices, search, the product out of stock cannot be added.
    response = page.goto(f"{stack.base}/")
    assert response is not None and response.status == 200
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Shop")
    cuff = page.locator("section.product", has_text="Blood pressure cuff")
    playwright_expect(cuff).to_contain_text("Unavailable")
    playwright_expect(cuff.get_by_role("button")).to_have_count(0)
    check(page, axe, "01-shop")
    page.get_by_label("Search products").fill("strips")
    with page.expect_navigation():
        page.get_by_role("button", name="Search").click()
    playwright_expect(page.locator("section.product")).to_have_count(1)
    check(page, axe, "02-shop-search")

    # Cart: two packs, by keyboard.
    page.get_by_label("Quantity").select_option("2")
    page.get_by_role("button", name=re.compile(r"^Add to cart\W+Glucose test strips")).focus()
    with page.expect_navigation(url=f"{stack.base}/shop/cart"):
        page.keyboard.press("Enter")
    playwright_expect(page.locator("#cart-total")).to_have_text("$37.00")
    playwright_expect(page.get_by_role("link", name="Cart (2)")).to_be_visible()
    check(page, axe, "03-cart")

    # Details: bad ones are refused with every error shown, and nothing is placed.
    before = order_count(stack)
    with page.expect_navigation():
        page.get_by_role("link", name="Continue to your details").click()
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Your details")
    check(page, axe, "04-details")
    page.get_by_label("Full name").fill(PATIENT["name"])
    page.get_by_label("E-mail").fill("avery-at-example")
    page.get_by_label("Phone").fill("call me")
    page.get_by_label("Date of birth").fill("2090-01-01")
    page.get_by_label("Full name").focus()  # the inline check runs when a field is left
    playwright_expect(page.locator("#email-error")).to_contain_text("Enter your e-mail address")
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Continue to payment").click()
    assert refused.value is not None and refused.value.status == 422
    alert = page.get_by_role("alert")
    for message in ("e-mail address", "phone number", "date of birth", "privacy notice"):
        playwright_expect(alert).to_contain_text(message)
    playwright_expect(page.get_by_label("E-mail")).to_have_attribute("aria-invalid", "true")
    check(page, axe, "05-details-errors")
    assert order_count(stack) == before

    page.get_by_label("E-mail").fill(email_address)
    page.get_by_label("Phone").fill(PATIENT["phone"])
    page.get_by_label("Date of birth").fill(PATIENT["date_of_birth"])
    page.get_by_role("checkbox").check()
    with page.expect_navigation(url=f"{stack.base}/pay"):
        page.get_by_role("button", name="Continue to payment").click()
    assert order_count(stack) == before + 1

    # Pay by card through localstripe (the date of birth was just typed: no second question).
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Pay for your order")
    playwright_expect(page.locator("#total")).to_have_text("$37.00")
    fill_card(page, "4242 4242 4242 4242")
    check(page, axe, "06-pay")
    with page.expect_navigation(url=f"{stack.base}/orders/status"):
        page.get_by_role("button", name="Pay $37.00").click()

    reference = page.get_by_role("heading", level=1).inner_text().removeprefix("Order ")
    orders = ok(stack.api.get("/orders", params={"limit": 200}, headers=stack.admin))["items"]
    (order,) = [o for o in orders if o["id"].upper().startswith(reference)]
    assert order["total_cents"] == 3700
    wait_for(
        "the signed webhook to mark the order paid",
        lambda: (
            ok(stack.api.get(f"/orders/{order['id']}", headers=stack.admin))["status"] == "paid"
        ),
        stack,
    )
    page.reload()
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text(f"Order {reference}")
    playwright_expect(page.locator("#order-status")).to_have_text("Paid")
    playwright_expect(page.locator("main")).to_contain_text("Glucose test strips (50)")
    playwright_expect(page.locator("#total")).to_have_text("$37.00")
    playwright_expect(page.locator("main")).to_contain_text("What happens next")
    check(page, axe, "07-confirmation")

    # My orders: e-mail and date of birth, a link by e-mail, the order paid.
    with page.expect_navigation():
        page.get_by_role("navigation", name="Site").get_by_role("link", name="My orders").click()
    check(page, axe, "08-my-orders-request")
    page.get_by_label("E-mail").fill(email_address)
    page.get_by_label("Date of birth").fill(PATIENT["date_of_birth"])
    with page.expect_navigation():
        page.get_by_role("button", name="E-mail me a link").click()
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Check your e-mail")
    check(page, axe, "09-my-orders-sent")

    # One run of the worker e-mails the payment link, the receipt with the status link, and
    # the "my orders" link.
    mails = {str(m["Subject"]): m for m in delivered_mail(stack, tmp_path)}
    receipt = mails[f"Payment received for order {reference}"]
    assert receipt["To"] == email_address
    assert f"Your order {reference} is ready for payment" in mails
    assert re.search(rf"{re.escape(stack.base)}/pay/[A-Za-z0-9_-]+", body(receipt))
    for mail in mails.values():
        assert PATIENT["name"] not in body(mail) and "Glucose" not in body(mail)
    link_mail = mails["Your orders: the link you asked for"]
    assert link_mail["To"] == email_address
    (orders_url,) = re.findall(
        rf"{re.escape(stack.base)}/my-orders/[A-Za-z0-9_-]+", body(link_mail)
    )
    page.goto(orders_url)
    assert page.url == f"{stack.base}/my-orders/list"  # the token left the address bar
    section = page.locator("section.order", has_text=f"Order {reference}")
    playwright_expect(section.locator(".order-status")).to_have_text("Paid")
    playwright_expect(section).to_contain_text("2 \u00d7 Glucose test strips (50)")
    check(page, axe, "10-my-orders")

    # The link's token, once more from another device after it was replaced: nothing shown.
    page.goto(f"{stack.base}/my-orders/{'x' * 32}")
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Link not valid")
    check(page, axe, "11-my-orders-link-not-valid")
    page.goto(f"{stack.base}/shop/privacy")
    check(page, axe, "12-privacy-notice")


def test_a_product_out_of_stock_cannot_be_added_even_by_a_hand_made_form(
    stack: Stack, phone: BrowserContext, axe: str
) -> None:
    """The shop offers no button for it; a form sent anyway (with this browser's token) is
    refused with the reason, and the cart stays empty."""
    gone = stock(stack, "Pulse oximeter", 2500, 0)
    page = phone.new_page()
    page.goto(f"{stack.base}/shop")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    page.set_content(
        f"""<form method="post" action="{stack.base}/shop/cart">
        <input name="csrf_token" value="{token}"><input name="product_id" value="{gone["id"]}">
        <input name="quantity" value="1"><button>Add</button></form>"""
    )
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Add").click()
    assert refused.value is not None and refused.value.status == 409
    playwright_expect(page.get_by_role("alert")).to_contain_text("Pulse oximeter is out of stock")
    check(page, axe, "13-unavailable-refused")
    page.goto(f"{stack.base}/shop/cart")
    playwright_expect(page.locator("main")).to_contain_text("Your cart is empty")
    check(page, axe, "14-cart-empty")


def test_the_shop_works_without_javascript_up_to_the_payment_form(
    stack: Stack, browser: Browser
) -> None:
    stock(stack, "Cotton swabs (200)", 450, 5)
    context = browser.new_context(**PHONE_390, java_script_enabled=False)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto(f"{stack.base}/shop?q=swabs")
        with page.expect_navigation(url=f"{stack.base}/shop/cart"):
            page.get_by_role("button", name=re.compile(r"^Add to cart\W+Cotton swabs")).click()
        page.get_by_label("Quantity").select_option("3")
        with page.expect_navigation(url=f"{stack.base}/shop/cart"):
            page.get_by_role("button", name=re.compile(r"^Update")).click()
        playwright_expect(page.locator("#cart-total")).to_have_text("$13.50")
        page.get_by_role("link", name="Continue to your details").click()
        page.get_by_label("Full name").fill("Sam Nojs")
        page.get_by_label("E-mail").fill(f"sam.{uuid.uuid4().hex[:6]}@example.com")
        page.get_by_label("Phone").fill("+1 555 010 0177")
        page.get_by_label("Date of birth").fill("1990-02-03")
        page.get_by_role("checkbox").check()
        with page.expect_navigation(url=f"{stack.base}/pay"):
            page.get_by_role("button", name="Continue to payment").click()
        playwright_expect(page.locator("#total")).to_have_text("$13.50")
    finally:
        context.close()
