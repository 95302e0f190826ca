from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.schemas import StrictInput


class IntentRequest(StrictInput):
    order_id: uuid.UUID | None = None


class IntentOut(BaseModel):
    payment_intent_id: str
    client_secret: str


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: uuid.UUID
    stripe_payment_intent_id: str
    status: str
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
