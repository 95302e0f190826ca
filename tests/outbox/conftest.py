"""The outbox tests deliver real refunds to the local Stripe stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.stripe import LocalStripe, app_pointed_at


@pytest.fixture(scope="package", autouse=True)
def _stripe_settings(localstripe: LocalStripe) -> Iterator[None]:
    with app_pointed_at(localstripe):
        yield
