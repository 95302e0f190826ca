"""The local Stripe stand-in for the payment tests, and an order ready to be paid."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.orders import create_product, place_order, receive_lot
from tests.fixtures.patients import Headers, Json, create_patient
from tests.fixtures.payments import create_intent
from tests.fixtures.stripe import LocalStripe, app_pointed_at


@pytest.fixture(scope="package", autouse=True)
def _stripe_settings(localstripe: LocalStripe) -> Iterator[None]:
    """The app talks to the stand-in and verifies webhooks with the test secret."""
    with app_pointed_at(localstripe):
        yield


@pytest.fixture
def patient(client: TestClient, doctor: Headers) -> Json:
    """A patient of `doctor` ("doctor-main")."""
    return create_patient(client, doctor)


@pytest.fixture
def product(client: TestClient, admin: Headers) -> Json:
    product = create_product(client, admin, sku=f"P-{uuid.uuid4().hex[:8]}", price_cents=1299)
    receive_lot(client, admin, product["id"], 100)
    return product


@pytest.fixture
def order(client: TestClient, doctor: Headers, patient: Json, product: Json) -> Json:
    """A pending order of doctor-main: 2 x 12.99 = 25.98 USD."""
    return place_order(client, doctor, patient["id"], (product["id"], 2))


@pytest.fixture
def intent_id(client: TestClient, doctor: Headers, order: Json) -> str:
    """The order's PaymentIntent, created at the stand-in through the API."""
    return str(create_intent(client, doctor, order["id"])["payment_intent_id"])
