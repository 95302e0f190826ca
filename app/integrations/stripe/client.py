"""The one place that talks to Stripe (or, in development and tests, the local stand-in)."""

from __future__ import annotations

from functools import lru_cache

import stripe

from app.config import get_settings


@lru_cache
def stripe_client() -> stripe.StripeClient:
    settings = get_settings()
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
    )
