"""The outbox tests deliver real refunds to the local Stripe stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.payments.local_stripe import LocalStripe, app_pointed_at, shared_server


@pytest.fixture(scope="session")
def localstripe(_settings: None) -> Iterator[LocalStripe]:
    """The same session-wide localstripe as tests/payments (one server, shared)."""
    with shared_server() as server:
        yield server


@pytest.fixture(scope="package", autouse=True)
def _stripe_settings(localstripe: LocalStripe) -> Iterator[None]:
    with app_pointed_at(localstripe):
        yield
