"""The patient's checkout pages: an HTTPS test client (the checkout cookie is `Secure`), the
local Stripe stand-in shared with tests/payments, a doctor's order with its payment link, and a
live API (`stack`) for the tests that need real HTTP from outside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.checkout.live_server import Stack, running_stack
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.orders import ORDERS, create_product, order_body, receive_lot
from tests.fixtures.patients import DATE_OF_BIRTH, Headers, Json, create_patient
from tests.fixtures.stripe import LocalStripe, app_pointed_at


@pytest.fixture(scope="package", autouse=True)
def _stripe_settings(localstripe: LocalStripe) -> Iterator[None]:
    with app_pointed_at(localstripe):
        yield


@pytest.fixture
def https(app: Any) -> Iterator[TestClient]:
    """A client on https://, so its cookie jar sends the `Secure` checkout cookie back."""
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def patient(https: TestClient, doctor: Headers) -> Json:
    return create_patient(
        https,
        doctor,
        name="Imogen Private",
        email="imogen.private@example.com",
        phone="+1 555 010 0177",
        date_of_birth=DATE_OF_BIRTH,
    )


@pytest.fixture
def product(https: TestClient, admin: Headers) -> Json:
    product = create_product(https, admin, name="Semaglutide 1 mg pen", price_cents=1299)
    receive_lot(https, admin, product["id"], 50)
    return product


@pytest.fixture
def order(https: TestClient, doctor: Headers, patient: Json, product: Json) -> Json:
    """A pending order of doctor-main for `patient`: 2 x 12.99 = 25.98 USD, as its creation
    answered, so with the one-time `checkout_url`."""
    response = https.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 2)), headers=doctor
    )
    assert response.status_code == 201, response.text
    created: Json = response.json()
    return created


@pytest.fixture
def stack(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, localstripe: LocalStripe, tmp_path: Path
) -> Iterator[Stack]:
    """A live API on a committed database copy, its webhook registered at localstripe."""
    with running_stack(fresh_db, jwt_issuer, localstripe, tmp_path / "uvicorn.log") as stack:
        yield stack
