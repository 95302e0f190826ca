"""The patient's checkout end to end, in a real headless Chromium on a phone-sized screen.

A live uvicorn server runs on a committed database copy, with the JWT issuer of the tests and
the local Stripe stand-in (localstripe, loopback, shared with tests/payments): the page loads
localstripe's Stripe.js stand-in and its Card Element, the API creates PaymentIntents there,
and localstripe's signed webhooks come back to the API. A doctor creates the patient and the
order through the API; the patient opens the link, confirms their date of birth, types a card
and pays; the order becomes paid only through the webhook. `portal worker --once` then e-mails
the payment link and the receipt to a loopback SMTP sink, and the receipt's status link opens
the order's status on another device.

TEST DOUBLE, browser side only: localstripe's `confirmCardPayment()` ignores the card the
patient typed and only answers a 3-D Secure prompt for an intent already confirmed on the
server, so it cannot pay the intents the portal creates (no payment method yet). The test
replaces just that one call (`STRIPE_JS_TEST_DOUBLE`, injected with `add_init_script`) with
what Stripe does for it, performed against localstripe over HTTP by the test process: create a
PaymentMethod from the values in localstripe's Card Element, attach it to the intent named by
the client secret, confirm. Charging, declines and the signed webhooks are localstripe's own.
Nothing of this is in the application.

Screenshots of every step go to test-artifacts/checkout/ (git-ignored).

Needs Debian's chromium at /usr/bin/chromium (`make test` installs it).
Playwright drives that binary; `playwright install` is never used.
"""

from __future__ import annotations

import email
import re
import uuid
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from playwright.sync_api import expect as playwright_expect
from sqlalchemy import text

from app.checkout.service import COOKIE_NAME
from app.db import make_engine
from devtools.mail_sink import MailSink
from tests.checkout.live_server import (
    DATE_OF_BIRTH,
    PROJECT_ROOT,
    Stack,
    deliver_outbox,
    doctors_order,
    ok,
    wait_for,
)
from tests.fixtures.browser import chromium
from tests.fixtures.stripe_js import STRIPE_JS_TEST_DOUBLE, confirm_card_payment, fill_card

PHONE = {
    "viewport": {"width": 375, "height": 812},
    "user_agent": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    ),
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "checkout"
GOOD_CARD = "4242 4242 4242 4242"  # as a patient types it; Stripe.js drops the spaces
# localstripe declines a charge only for Stripe's "attaches, then the charge fails" test cards;
# 4000 0000 0000 0002 is declined by localstripe only when attached to a customer.
DECLINED_CARD = "4000 0000 0000 0341"


# -- the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    with chromium(playwright) as browser:
        yield browser


@pytest.fixture
def phone(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    """A fresh phone-sized browser profile (no cookies) with the Stripe.js test double."""
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    context.expose_function(
        "stripeTestDoubleConfirmCardPayment", confirm_card_payment(stack.stripe)
    )
    context.add_init_script(STRIPE_JS_TEST_DOUBLE)
    yield context
    context.close()


# -- helpers ----------------------------------------------------------------------------------
def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def order_status(stack: Stack, order_id: str) -> str:
    status: str = ok(stack.api.get(f"/orders/{order_id}", headers=stack.doctor))["status"]
    return status


def payments_of(stack: Stack, order_id: str) -> list[dict[str, Any]]:
    page = ok(stack.api.get("/payments", params={"order_id": order_id}, headers=stack.admin))
    items: list[dict[str, Any]] = page["items"]
    return items


def open_and_verify(page: Page, stack: Stack, order: dict[str, Any]) -> None:
    """Open the link from the message, answer the date-of-birth question: the payment page."""
    response = page.goto(order["checkout_url"])
    assert response is not None and response.status == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert page.url == f"{stack.base}/pay"  # the token left the address bar (and history)
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    page.get_by_label("Your date of birth").fill(DATE_OF_BIRTH)
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Pay for your order")


# -- the tests --------------------------------------------------------------------------------
def test_a_patient_pays_by_card_on_a_phone_and_the_webhook_marks_the_order_paid(
    stack: Stack, browser: Browser, phone: BrowserContext, tmp_path: Path
) -> None:
    order = doctors_order(stack)
    page = phone.new_page()

    response = page.goto(order["checkout_url"])
    assert response is not None and response.status == 200
    assert page.url == f"{stack.base}/pay"
    (cookie,) = [c for c in phone.cookies() if c["name"] == COOKIE_NAME]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts
    page_text = page.locator("main").inner_text()
    assert order["patient"]["name"] not in page_text
    assert order["product"]["name"] not in page_text
    shot(page, "01-verify.png")

    page.get_by_label("Your date of birth").fill("1975-09-15")
    with page.expect_navigation() as wrong:
        page.get_by_role("button", name="Continue").click()
    assert wrong.value is not None and wrong.value.status == 422
    playwright_expect(page.get_by_role("alert")).to_contain_text("4 attempt(s) left")
    shot(page, "02-verify-wrong-date.png")

    page.get_by_label("Your date of birth").fill(DATE_OF_BIRTH)
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Pay for your order")
    playwright_expect(page.locator("#total")).to_have_text("$55.50")  # 3 x 18.50
    playwright_expect(page.locator("main")).to_contain_text(order["product"]["name"])
    playwright_expect(page.locator("main")).to_contain_text(order["patient"]["name"])
    fill_card(page, GOOD_CARD)
    # Nothing overflows the phone's width.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "03-pay-card-filled.png")

    with page.expect_navigation(url=f"{stack.base}/orders/status"):
        page.get_by_role("button", name="Pay $55.50").click()
    shot(page, "04-after-payment.png")

    wait_for(
        "the signed webhook to mark the order paid",
        lambda: order_status(stack, order["id"]) == "paid",
        stack,
    )
    (payment,) = payments_of(stack, order["id"])
    assert payment["status"] == "succeeded"
    assert payment["amount_cents"] == 5550
    intent = stack.stripe.intent(payment["stripe_payment_intent_id"])
    assert intent["status"] == "succeeded"
    assert intent["metadata"] == {"order_id": order["id"]}  # nothing about the patient
    method = stack.stripe.get(f"/v1/payment_methods/{intent['payment_method']}")
    assert method["card"]["last4"] == "4242"  # the card typed into the page
    assert (method["card"]["exp_month"], method["card"]["exp_year"]) == (12, 2030)

    page.reload()
    playwright_expect(page.locator("#order-status")).to_have_text("Paid")
    shot(page, "05-paid.png")

    # The outbox worker e-mails the patient: first the payment link, then the receipt, whose
    # status link opens the order's status (never a second payment).
    with MailSink(tmp_path / "mail") as sink:
        report = deliver_outbox(stack, sink.port, tmp_path)
        mails = [
            email.message_from_bytes(m.read_bytes(), policy=policy.default) for m in sink.messages()
        ]
    assert "2 delivered" in report, report
    reference = order["id"][:8].upper()  # as the pages write it
    by_subject = {str(m["Subject"]): m for m in mails}
    assert set(by_subject) == {
        f"Your order {reference} is ready for payment",
        f"Payment received for order {reference}",
    }
    link_mail = by_subject[f"Your order {reference} is ready for payment"]
    receipt = by_subject[f"Payment received for order {reference}"]
    for mail in (link_mail, receipt):
        assert mail["To"] == order["patient"]["email"]
        body = mail.get_body(preferencelist=("plain",)).get_content()
        for private in (order["patient"]["name"], order["product"]["name"], DATE_OF_BIRTH):
            assert private not in body + str(mail)
    assert order["checkout_url"] in link_mail.get_body(preferencelist=("plain",)).get_content()
    receipt_text = receipt.get_body(preferencelist=("plain",)).get_content()
    assert "Its status: paid." in receipt_text
    (status_url,) = re.findall(rf"{re.escape(stack.base)}/pay/[A-Za-z0-9_-]+", receipt_text)
    assert status_url != order["checkout_url"]

    fresh = browser.new_context(**PHONE)  # type: ignore[arg-type]  # another device, no cookie
    try:
        inbox_page = fresh.new_page()
        response = inbox_page.goto(status_url)
        assert response is not None and response.status == 200
        assert inbox_page.url == f"{stack.base}/orders/status"
        playwright_expect(inbox_page.locator("#order-status")).to_have_text("Paid")
        shot(inbox_page, "06-receipt-status-link.png")
    finally:
        fresh.close()


def test_an_expired_link_shows_the_expired_page_in_the_browser(
    stack: Stack, phone: BrowserContext
) -> None:
    order = doctors_order(stack)
    engine = make_engine(stack.database.owner_url, pool_size=1)
    try:
        with engine.begin() as connection:
            for table, column in (("checkout_links", "order_id"), ("orders", "id")):
                connection.execute(
                    text(
                        f"UPDATE {table} SET expires_at = now() - interval '1 minute'"
                        f" WHERE {column} = :id"
                    ),
                    {"id": order["id"]},
                )
    finally:
        engine.dispose()

    page = phone.new_page()
    response = page.goto(order["checkout_url"])
    assert response is not None and response.status == 410
    assert response.headers["referrer-policy"] == "no-referrer"
    playwright_expect(page.get_by_role("heading", level=1)).to_have_text("Link expired")
    playwright_expect(page.get_by_role("alert")).to_contain_text("ask for a new payment link")
    assert order["patient"]["name"] not in page.locator("main").inner_text()
    assert not [c for c in phone.cookies() if c["name"] == COOKIE_NAME]
    shot(page, "07-expired.png")


def test_a_declined_card_shows_the_error_and_leaves_the_order_awaiting_payment(
    stack: Stack, phone: BrowserContext
) -> None:
    order = doctors_order(stack)
    page = phone.new_page()
    open_and_verify(page, stack, order)
    fill_card(page, DECLINED_CARD)
    page.get_by_role("button", name="Pay $55.50").click()

    message = page.locator("#payment-message")
    playwright_expect(message).to_have_text("Your card was declined.")
    playwright_expect(page.get_by_role("button", name="Pay $55.50")).to_be_enabled()
    assert page.url == f"{stack.base}/pay"
    shot(page, "08-declined.png")

    # localstripe's signed payment_intent.payment_failed reaches the API: recorded, still pending.
    (payment,) = wait_for(
        "the payment_failed webhook",
        lambda: [p for p in payments_of(stack, order["id"]) if p["failure_reason"]],
        stack,
    )
    assert payment["status"] == "requires_payment_method"
    assert payment["failure_reason"] == "Your card was declined."
    assert order_status(stack, order["id"]) == "pending"

    page.goto(f"{stack.base}/orders/status")
    playwright_expect(page.locator("#order-status")).to_have_text("Awaiting payment")
    shot(page, "09-declined-status.png")


def test_a_patient_orders_for_themselves_and_pays_through_the_returned_link(
    stack: Stack, phone: BrowserContext
) -> None:
    product = ok(
        stack.api.post(
            "/products",
            json={
                "sku": f"OTC-{uuid.uuid4().hex[:8]}",
                "name": "Alcohol prep pads (200)",
                "price_cents": 900,
            },
            headers=stack.admin,
        ),
        201,
    )
    ok(
        stack.api.post(
            f"/products/{product['id']}/lots",
            json={"lot_number": f"OTC-{uuid.uuid4().hex[:6]}", "quantity": 10},
            headers=stack.admin,
        ),
        201,
    )
    # The storefront is public: no token, only the patient's own details.
    listed = ok(stack.api.get("/public/products", params={"limit": 200}))["items"]
    assert product["id"] in {p["id"] for p in listed}
    order = ok(
        stack.api.post(
            "/public/orders",
            json={
                "items": [{"product_id": product["id"], "quantity": 2}],
                "name": "Dana Selforder",
                "email": f"dana.{uuid.uuid4().hex[:6]}@example.com",
                "phone": "+1 555 010 0177",
                "date_of_birth": DATE_OF_BIRTH,
            },
        ),
        201,
    )
    assert order["total_cents"] == 1800

    page = phone.new_page()
    open_and_verify(page, stack, order)
    playwright_expect(page.locator("#total")).to_have_text("$18.00")
    fill_card(page, GOOD_CARD)
    shot(page, "10-self-order-pay.png")
    with page.expect_navigation(url=f"{stack.base}/orders/status"):
        page.get_by_role("button", name="Pay $18.00").click()

    wait_for(
        "the signed webhook to mark the self-order paid",
        lambda: (
            ok(stack.api.get(f"/orders/{order['order_id']}", headers=stack.admin))["status"]
            == "paid"
        ),
        stack,
    )
    page.reload()
    playwright_expect(page.locator("#order-status")).to_have_text("Paid")
    shot(page, "11-self-order-paid.png")
