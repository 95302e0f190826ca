from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.models.status import PaymentStatus
from app.schemas import StrictInput


def _order_id_required(schema: dict[str, Any]) -> None:
    # The document describes bearer-token callers, who must name the order. The patient's
    # checkout page (a cookie, outside the document) may send `{}`: its link names the order.
    schema["required"] = ["order_id"]
    schema["properties"]["order_id"] = {
        "type": "string",
        "format": "uuid",
        "title": "Order Id",
        "description": "The pending order to pay",
    }


class IntentRequest(StrictInput):
    model_config = ConfigDict(json_schema_extra=_order_id_required)

    order_id: uuid.UUID | None = None


class IntentOut(BaseModel):
    payment_intent_id: str
    client_secret: str


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: uuid.UUID
    stripe_payment_intent_id: str
    status: PaymentStatus
    method: str | None
    amount_cents: int
    refunded_cents: int
    currency: str
    failure_reason: str | None
    disputed: bool
    refunded_after_fulfilment: bool
    created_at: datetime
    succeeded_at: datetime | None


class WebhookAck(BaseModel):
    received: bool
    outcome: str
