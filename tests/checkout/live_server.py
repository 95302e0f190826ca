"""A live API for the checkout tests that need real HTTP from outside: a browser, parallel
clients, localstripe's webhook deliveries. uvicorn runs on a free loopback port on a committed
database copy, with the tests' JWT issuer and the local Stripe stand-in; staff work through the
API with JWTs like any client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from devtools.devstack import register_stripe_webhook
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import PROJECT_ROOT, live_api
from tests.fixtures.stripe import LocalStripe

PORTAL = str(Path(sys.executable).parent / "portal")
WEBHOOK_SECRET = "whsec_checkout_tests_" + uuid.uuid4().hex
API = "/api/v1"
DATE_OF_BIRTH = "1975-09-14"


@dataclass
class Stack:
    base: str  # the API's origin, also its PUBLIC_BASE_URL
    api: httpx.Client  # on base + /api/v1
    doctor: dict[str, str]
    admin: dict[str, str]
    stripe: LocalStripe
    database: TestDatabase
    log: Path


@contextmanager
def api_server(
    database: TestDatabase, issuer: JwtIssuer, stripe: LocalStripe, log_path: Path
) -> Iterator[str]:
    """The API configured for the checkout pages: localstripe's Stripe.js, the Card Element,
    links on its own origin."""

    def settings(base: str) -> dict[str, str]:
        return {
            "DATABASE_URL": database.app_url,
            "OIDC_ISSUER": issuer.url,
            "OIDC_AUDIENCE": AUDIENCE,
            "STRIPE_API_BASE": stripe.base,
            "STRIPE_JS_URL": f"{stripe.base}/js.stripe.com/v3/",
            "STRIPE_CHECKOUT_UI": "card_element",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PUBLIC_BASE_URL": base,
        }

    with live_api(settings, log_path) as base:
        yield base


@contextmanager
def running_stack(
    database: TestDatabase, issuer: JwtIssuer, stripe: LocalStripe, log_path: Path
) -> Iterator[Stack]:
    with api_server(database, issuer, stripe, log_path) as base:
        # What the Stripe Dashboard's webhook endpoint setting does in production.
        register_stripe_webhook(stripe.base, f"{base}{API}/payments/webhook", WEBHOOK_SECRET)

        def bearer(role: str) -> dict[str, str]:
            sub = f"checkout-{role}"
            token = issuer.token(sub, role=role, email=f"{sub}@clinic.test", expires_in=900)
            return {"Authorization": f"Bearer {token}"}

        with httpx.Client(base_url=base + API, timeout=15) as api:
            yield Stack(base, api, bearer("doctor"), bearer("admin"), stripe, database, log_path)


def deliver_outbox(stack: Stack, smtp_port: int, data_dir: Path) -> str:
    """One run of `portal worker --once` (as a deployment runs it) on the stack's database,
    e-mailing through the SMTP server on `smtp_port`; returns its report."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "OIDC_", "STRIPE_", "SMTP_", "SMS_", "DATA_DIR"))
        and k != "PUBLIC_BASE_URL"
    }
    env.update(
        ENVIRONMENT="test",
        DATABASE_URL=stack.database.app_url,
        STRIPE_API_BASE=stack.stripe.base,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        SMTP_STARTTLS="false",
        DATA_DIR=str(data_dir),
        PUBLIC_BASE_URL=stack.base,  # messages may only link into the portal
    )
    result = subprocess.run(
        [PORTAL, "worker", "--once"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def doctors_order(stack: Stack) -> dict[str, Any]:
    """Admin stocks a product; a doctor creates a patient and orders 3 for them (the API).
    The order carries `patient` and `product` as the API returned them."""
    product = ok(
        stack.api.post(
            "/products",
            json={
                "sku": f"CHK-{uuid.uuid4().hex[:8]}",
                "name": "Glucose test strips (50)",
                "price_cents": 1850,
                "perishable": False,
            },
            headers=stack.admin,
        ),
        201,
    )
    lot = {
        "lot_number": f"CHK-{uuid.uuid4().hex[:6]}",
        "quantity": 20,
        "expiration_date": (date.today() + timedelta(days=365)).isoformat(),
    }
    ok(stack.api.post(f"/products/{product['id']}/lots", json=lot, headers=stack.admin), 201)
    patient = ok(
        stack.api.post(
            "/patients",
            json={
                "name": "Marisol Okafor",
                "email": f"marisol.{uuid.uuid4().hex[:6]}@example.com",
                "phone": "+1 555 010 0123",
                "date_of_birth": DATE_OF_BIRTH,
            },
            headers=stack.doctor,
        ),
        201,
    )
    order = ok(
        stack.api.post(
            "/orders",
            json={
                "patient_id": patient["id"],
                "items": [{"product_id": product["id"], "quantity": 3}],
            },
            headers=stack.doctor,
        ),
        201,
    )
    assert order["checkout_url"].startswith(f"{stack.base}/pay/")
    return {**order, "patient": patient, "product": product}


def wait_for(what: str, probe: Callable[[], Any], stack: Stack, timeout: float = 20.0) -> Any:
    """Poll until `probe()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}; server log:\n{stack.log.read_text()[-4000:]}"
        )
        time.sleep(0.25)
