"""What Stripe holds for a period, read through its list API for reconciliation.

The PaymentIntents created in a period (every page, their latest charge expanded), the refunds
of those with money refunded, and the disputes opened since the period began. Plain dicts come
back: what they mean for the portal is decided in `app.payments.reconciliation_service`.

The local stand-in (localstripe) lacks two things Stripe has, and both are handled here, named:
it cannot filter PaymentIntents by `created` (it answers 400 "Unexpected created"), so the
whole list is read and filtered here; and it has no disputes at all (404), so only the charges'
own `disputed` flags can be compared (`StripeState.disputes_listed` is then False).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import stripe

PAGE = 100


class StripeListingFailed(Exception):
    """Stripe could not be read (unreachable, refused): nothing was compared."""


@dataclass(frozen=True)
class StripeState:
    """Stripe's side of a period."""

    intents: list[dict[str, Any]]
    # PaymentIntent id -> its refunds (only intents with money refunded are asked).
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # PaymentIntent id -> the disputes of its charges opened since the period began.
    disputes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    disputes_listed: bool = True


def _plain(obj: Any) -> dict[str, Any]:
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return dict(obj)


def _all(listing: Any) -> Iterable[dict[str, Any]]:
    for item in listing.auto_paging_iter():
        yield _plain(item)


def reference(value: Any) -> str | None:
    """An object's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def cents(value: Any) -> int | None:
    """An amount in cents. Stripe sends integers; the stand-in echoes an updated amount as the
    string it was sent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _in_period(created: Any, start: datetime, end: datetime) -> bool:
    return isinstance(created, int) and start.timestamp() <= created < end.timestamp()


def payment_intents_created(
    client: stripe.StripeClient, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Every PaymentIntent created in [start, end), each with its latest charge expanded."""
    created: stripe.params.PaymentIntentListParamsCreated = {
        "gte": math.floor(start.timestamp()),
        "lt": math.ceil(end.timestamp()),
    }
    expand = ["data.latest_charge"]
    try:
        listing = client.v1.payment_intents.list(
            params={"limit": PAGE, "expand": expand, "created": created}
        )
    except stripe.InvalidRequestError as exc:
        if "created" not in str(exc):
            raise
        # The local stand-in cannot filter by creation: read everything, filter below.
        listing = client.v1.payment_intents.list(params={"limit": PAGE, "expand": expand})
    return [i for i in _all(listing) if _in_period(i.get("created"), start, end)]


def payment_intent(client: stripe.StripeClient, intent_id: str) -> dict[str, Any] | None:
    """One PaymentIntent with its latest charge, or None when Stripe does not know it."""
    try:
        intent = client.v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]})
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            return None
        raise
    return _plain(intent)


def refunds_of(client: stripe.StripeClient, intent_id: str) -> list[dict[str, Any]]:
    return list(_all(client.v1.refunds.list(params={"payment_intent": intent_id, "limit": PAGE})))


def disputes_since(client: stripe.StripeClient, start: datetime) -> list[dict[str, Any]] | None:
    """The disputes opened since `start`, or None where the API has no disputes (the local
    stand-in answers 404)."""
    try:
        listing = client.v1.disputes.list(
            params={"created": {"gte": math.floor(start.timestamp())}, "limit": PAGE}
        )
        return list(_all(listing))
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            return None
        raise


def read_period(
    client: stripe.StripeClient,
    start: datetime,
    end: datetime,
    *,
    also: Iterable[str] = (),
) -> StripeState:
    """Stripe's state for the intents created in the period, plus the intents `also` names (the
    portal's payments of the period that Stripe's list did not return, e.g. created a moment
    earlier at Stripe). An intent Stripe does not know is left out. Raises
    `StripeListingFailed` when Stripe cannot be read."""
    try:
        intents = payment_intents_created(client, start, end)
        listed = {i["id"] for i in intents}
        for intent_id in also:
            if intent_id not in listed and (found := payment_intent(client, intent_id)):
                intents.append(found)
                listed.add(intent_id)
        refunds: dict[str, list[dict[str, Any]]] = {}
        for intent in intents:
            charge = intent.get("latest_charge")
            if isinstance(charge, dict) and (cents(charge.get("amount_refunded")) or 0) > 0:
                refunds[intent["id"]] = refunds_of(client, intent["id"])
        found_disputes = disputes_since(client, start)
    except stripe.StripeError as exc:
        raise StripeListingFailed(f"Stripe could not be read: {exc.user_message or exc}") from exc
    disputes: dict[str, list[dict[str, Any]]] = {}
    for dispute in found_disputes or []:
        disputed = reference(dispute.get("payment_intent"))
        if disputed is not None and disputed in listed:
            disputes.setdefault(disputed, []).append(dispute)
    return StripeState(intents, refunds, disputes, disputes_listed=found_disputes is not None)
