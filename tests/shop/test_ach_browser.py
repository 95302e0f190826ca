"""The production payment page (Stripe's Payment Element) asks Stripe for card and US bank
account, and a bank debit's `processing`, `succeeded` and `payment_failed` events show the
patient the right status.

A live API runs with the production page (`STRIPE_CHECKOUT_UI=payment_element`, Stripe.js from
https://js.stripe.com/v3/) on a committed database copy; PaymentIntents are created at
localstripe over HTTP, and the webhook events reach the API signed with its configured secret.

TEST DOUBLE, browser side only: Stripe.js. localstripe's stand-in has no Payment Element, no
`confirmPayment` and no `us_bank_account`, so the request for https://js.stripe.com/v3/ is
answered by `STRIPE_JS_PAYMENT_ELEMENT_DOUBLE`: it records what the page asks of Stripe.js
(`elements()` options, `create("payment")`, `submit()`, `confirmPayment()`), renders a stand-in
method picker, and on `confirmPayment` asks the test process, which checks the client secret
against localstripe and then sends what Stripe sends for a bank debit: a signed
`payment_intent.processing` event; then Stripe.js goes to the return URL, as it does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, Route, sync_playwright
from playwright.sync_api import expect as playwright_expect
from sqlalchemy import Engine

from tests.fixtures.axe import axe_source, violations
from tests.fixtures.browser import chromium
from tests.fixtures.database import TestDatabase, create_database, drop_database
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import PROJECT_ROOT, live_api
from tests.fixtures.stripe import LocalStripe, intent_event, signed

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "shop"
WEBHOOK_SECRET = "whsec_shop_ach_tests_" + uuid.uuid4().hex
STRIPE_JS = "https://js.stripe.com/v3/"
DATE_OF_BIRTH = "1969-04-30"
STRIPE_JS_PAYMENT_ELEMENT_DOUBLE = """
// TEST DOUBLE (tests/shop/test_ach_browser.py) of Stripe.js for the Payment Element.
window.stripeCalls = [];
window.Stripe = function (key) {
  const calls = window.stripeCalls;
  calls.push({call: "Stripe", key: key});
  return {
    elements(options) {
      calls.push({call: "elements", options: options});
      return {
        create(type, options) {
          calls.push({call: "create", type: type, options: options || null});
          return {
            mount(selector) {
              document.querySelector(selector).innerHTML =
                '<fieldset><legend>Payment method (test double)</legend>' +
                '<label><input type="radio" name="method" value="card"> Card</label> ' +
                '<label><input type="radio" name="method" value="us_bank_account" checked>' +
                ' US bank account</label></fieldset>';
            }
          };
        },
        async submit() { calls.push({call: "submit"}); return {}; }
      };
    },
    async confirmPayment(args) {
      calls.push({call: "confirmPayment", clientSecret: args.clientSecret,
                  returnUrl: args.confirmParams.return_url});
      const result = await window.stripeTestDoubleDebit(args.clientSecret);
      if (result.error) { return result; }
      window.location.assign(args.confirmParams.return_url);
      return new Promise(function () {});
    }
  };
};
"""


@pytest.fixture(scope="module")
def ach_db(pg_server: str, template_db: TestDatabase, app_engine: Engine) -> Iterator[TestDatabase]:
    app_engine.dispose()
    database = create_database(pg_server, template=template_db.name)
    yield database
    drop_database(pg_server, database.name)


@pytest.fixture(scope="module")
def base(
    ach_db: TestDatabase,
    jwt_issuer: JwtIssuer,
    localstripe: LocalStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The API with the production payment page."""

    def settings(base: str) -> dict[str, str]:
        return {
            "DATABASE_URL": ach_db.app_url,
            "OIDC_ISSUER": jwt_issuer.url,
            "OIDC_AUDIENCE": AUDIENCE,
            "STRIPE_API_BASE": localstripe.base,
            "STRIPE_JS_URL": STRIPE_JS,
            "STRIPE_CHECKOUT_UI": "payment_element",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PUBLIC_BASE_URL": base,
        }

    log = tmp_path_factory.mktemp("shop-ach") / "uvicorn.log"
    with live_api(settings, log) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    playwright: Playwright
    with sync_playwright() as playwright, chromium(playwright) as browser:
        yield browser


def send_event(base: str, event: dict[str, Any]) -> str:
    """Deliver a Stripe event to the webhook, signed with the API's configured secret."""
    payload, headers = signed(event, secret=WEBHOOK_SECRET)
    response = httpx.post(f"{base}/api/v1/payments/webhook", content=payload, headers=headers)
    assert response.status_code == 200, response.text
    outcome: str = response.json()["outcome"]
    return outcome


class Debits:
    """The double's server half: what Stripe does when a bank debit is confirmed. Keeps the
    intents it was asked to debit."""

    def __init__(self, base: str, localstripe: LocalStripe) -> None:
        self.base = base
        self.localstripe = localstripe
        self.intents: list[str] = []

    def __call__(self, client_secret: str) -> dict[str, Any]:
        intent_id = client_secret.split("_secret_")[0]
        intent = self.localstripe.intent(intent_id)
        if intent["client_secret"] != client_secret:
            return {"error": {"message": "The client secret does not match the payment."}}
        event = intent_event(
            "payment_intent.processing",
            intent_id,
            amount=intent["amount"],
            currency=intent["currency"],
            payment_method_types=["card", "us_bank_account"],
        )
        assert send_event(self.base, event) == "payment processing (bank debit)"
        self.intents.append(intent_id)
        return {"paymentIntent": {"id": intent_id, "status": "processing"}}


@pytest.fixture
def debits(base: str, localstripe: LocalStripe) -> Debits:
    return Debits(base, localstripe)


@pytest.fixture
def phone(browser: Browser, debits: Debits) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(15_000)

    def stripe_js(route: Route) -> None:
        route.fulfill(
            status=200, content_type="text/javascript", body=STRIPE_JS_PAYMENT_ELEMENT_DOUBLE
        )

    context.route(STRIPE_JS, stripe_js)
    context.expose_function("stripeTestDoubleDebit", debits)
    yield context
    context.close()


def self_order(base: str, jwt_issuer: JwtIssuer) -> dict[str, Any]:
    admin = {
        "Authorization": "Bearer "
        + jwt_issuer.token("ach-admin", role="admin", email="ach-admin@clinic.test", expires_in=900)
    }
    with httpx.Client(base_url=f"{base}/api/v1", timeout=15) as api:
        product = api.post(
            "/products",
            json={
                "sku": f"ACH-{uuid.uuid4().hex[:8]}",
                "name": "Lancets (100)",
                "price_cents": 1200,
            },
            headers=admin,
        )
        assert product.status_code == 201, product.text
        lot = {"lot_number": f"ACH-{uuid.uuid4().hex[:6]}", "quantity": 10}
        api.post(f"/products/{product.json()['id']}/lots", json=lot, headers=admin)
        order = api.post(
            "/public/orders",
            json={
                "items": [{"product_id": product.json()["id"], "quantity": 2}],
                "name": "Jordan Debit",
                "email": f"jordan.{uuid.uuid4().hex[:6]}@example.com",
                "phone": "+1 555 010 0133",
                "date_of_birth": DATE_OF_BIRTH,
            },
        )
        assert order.status_code == 201, order.text
        created: dict[str, Any] = order.json()
        return created


def test_the_payment_element_asks_for_card_and_us_bank_account_and_a_debit_settles(
    base: str, phone: BrowserContext, jwt_issuer: JwtIssuer, debits: Debits
) -> None:
    order = self_order(base, jwt_issuer)
    page = phone.new_page()
    page.goto(order["checkout_url"])
    page.get_by_label("Your date of birth").fill(DATE_OF_BIRTH)
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    playwright_expect(page.locator("#payment-element")).to_contain_text("US bank account")
    calls: list[dict[str, Any]] = page.evaluate("window.stripeCalls")
    (elements,) = [c for c in calls if c["call"] == "elements"]
    assert elements["options"] == {
        "mode": "payment",
        "amount": 2400,
        "currency": "usd",
        "paymentMethodTypes": ["card", "us_bank_account"],
    }
    (created,) = [c for c in calls if c["call"] == "create"]
    assert created["type"] == "payment"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "20-pay-payment-element.png"), full_page=True)
    assert violations(page, axe_source()) == []

    # Pay: submit, then confirmPayment with the intent the API created at localstripe.
    with page.expect_navigation(url=f"{base}/orders/status"):
        page.get_by_role("button", name="Pay $24.00").click()
    playwright_expect(page.locator("#order-status")).to_have_text("Payment processing")
    playwright_expect(page.locator("main")).to_contain_text("can take a few business days")
    page.screenshot(path=str(ARTIFACTS / "21-ach-processing.png"), full_page=True)
    assert violations(page, axe_source()) == []

    (intent_id,) = debits.intents
    outcome = send_event(
        base,
        intent_event(
            "payment_intent.succeeded",
            intent_id,
            amount=2400,
            currency="usd",
            payment_method_types=["card", "us_bank_account"],
        ),
    )
    assert outcome == "order paid"
    page.reload()
    playwright_expect(page.locator("#order-status")).to_have_text("Paid")
    page.screenshot(path=str(ARTIFACTS / "22-ach-succeeded.png"), full_page=True)


def test_a_failed_bank_debit_tells_the_patient(
    base: str, phone: BrowserContext, jwt_issuer: JwtIssuer, debits: Debits
) -> None:
    order = self_order(base, jwt_issuer)
    page = phone.new_page()
    page.goto(order["checkout_url"])
    page.get_by_label("Your date of birth").fill(DATE_OF_BIRTH)
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    with page.expect_navigation(url=f"{base}/orders/status"):
        page.get_by_role("button", name="Pay $24.00").click()
    playwright_expect(page.locator("#order-status")).to_have_text("Payment processing")

    (intent_id,) = debits.intents
    failed = intent_event(
        "payment_intent.payment_failed",
        intent_id,
        last_payment_error={"code": "insufficient_funds", "message": "Insufficient funds."},
    )
    failed["created"] = int(time.time()) + 2  # Stripe's failure comes after the processing
    assert send_event(base, failed) == "payment failed; order stays pending"
    page.reload()
    playwright_expect(page.locator("#order-status")).to_have_text("Bank payment failed")
    playwright_expect(page.locator("main")).to_contain_text("nothing was taken")
    playwright_expect(page.locator("#pay-again")).to_have_attribute("href", "/pay")
    page.screenshot(path=str(ARTIFACTS / "23-ach-failed.png"), full_page=True)
    assert violations(page, axe_source()) == []
