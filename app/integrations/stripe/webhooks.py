"""Stripe's webhook: the signature is the authentication."""

from __future__ import annotations

import json
from typing import Any

import stripe

from app.config import get_settings
from app.errors import PortalError


class InvalidWebhook(PortalError):
    status = 400
    slug = "invalid-webhook-signature"
    title = "The webhook signature is not valid"


def verify_webhook(payload: bytes, signature: str | None) -> dict[str, Any]:
    settings = get_settings()
    if not signature:
        raise InvalidWebhook("the Stripe-Signature header is missing")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            settings.stripe_webhook_secret,
            settings.stripe_webhook_tolerance_seconds,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    try:
        event: dict[str, Any] = json.loads(payload)
    except ValueError as exc:
        raise InvalidWebhook("the webhook body is not JSON") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise InvalidWebhook("the webhook body is not a Stripe event")
    return event
