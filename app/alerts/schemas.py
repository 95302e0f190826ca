from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.models.status import AlertState, AlertTopic
from app.schemas import StrictInput

# E.164 exactly (a plus, the country code, up to 15 digits), as SMS providers take it.
PhoneNumber = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9][0-9]{7,14}$"),
    Field(description="E.164, with the country code: +15550100199", examples=["+15550100199"]),
]


class Channels(StrictInput):
    """How one topic reaches you: e-mail to your account's address and/or SMS to `sms_to`.
    Neither (e-mail false, no number) is the same as not naming the topic."""

    email: bool = Field(strict=True, description="To your account's e-mail address")
    sms_to: PhoneNumber | None = None


class Subscriptions(StrictInput):
    """One entry per topic you hear about; a topic left out (or null) is not subscribed."""

    stock: Channels | None = Field(
        default=None, description="Low stock, lots expiring, products with only expired stock"
    )
    reconciliation: Channels | None = Field(
        default=None, description="Payments that disagree with Stripe (admins only)"
    )
    data_quality: Channels | None = Field(
        default=None, description="Failed data-quality checks (admins only)"
    )
    pharmacy: Channels | None = Field(
        default=None, description="The pharmacy link needs attention (admins only)"
    )


class SubscriptionsUpdate(StrictInput):
    """Replaces all your subscriptions."""

    subscriptions: Subscriptions


class SubscriptionsOut(BaseModel):
    subscriptions: Subscriptions
    available_topics: list[AlertTopic] = Field(description="The topics your role may hear about")
    email: str | None = Field(description="Where e-mail alerts go (your account's address)")


class AlertOut(BaseModel):
    id: uuid.UUID
    topic: AlertTopic
    key: str = Field(description="The condition, stable while it holds: `low-stock:<product id>`")
    summary: str
    details: dict[str, Any]
    state: AlertState
    opened_at: datetime
    cleared_at: datetime | None
