from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request

from app.checkout.payer import PayerDep
from app.db import DbSession
from app.errors import (
    Conflict,
    InvalidStateTransition,
    NotFound,
    Unprocessable,
    problem_responses,
)
from app.integrations.stripe.webhooks import InvalidWebhook, verify_webhook
from app.models import Order
from app.orders.service import get_visible_order
from app.pagination import Cursor, Limit, Page
from app.payments import flows, repository, service
from app.payments.schemas import IntentOut, IntentRequest, PaymentOut, WebhookAck
from app.security import AdminActor, Public

router = APIRouter(prefix="/payments", tags=["payments"])


@router.post(
    "/create-intent",
    response_model=IntentOut,
    responses=problem_responses(
        NotFound, InvalidStateTransition, Conflict, service.PaymentProviderUnavailable
    ),
)
def create_intent(payer: PayerDep, session: DbSession, data: IntentRequest) -> IntentOut:
    """Create (or reuse) the Stripe PaymentIntent for a pending order's current total.

    Staff name the order; the patient's checkout page sends `{}` and pays its own order.
    """
    if payer.order_id is not None:
        if data.order_id not in (None, payer.order_id):
            raise NotFound("order", data.order_id)
        order = session.get(Order, payer.order_id)
        assert order is not None
    else:
        if data.order_id is None:
            raise Unprocessable("order_id is required", field="order_id")
        order = get_visible_order(session, payer.actor, data.order_id)
    intent_id, secret = service.create_or_reuse_intent(session, payer.actor, order)
    return IntentOut(payment_intent_id=intent_id, client_secret=secret)


async def raw_body(request: Request) -> bytes:
    """The exact bytes Stripe signed (a parsed and re-serialised body would not verify)."""
    return await request.body()


@router.post(
    "/webhook",
    response_model=WebhookAck,
    dependencies=[Public],
    responses=problem_responses(InvalidWebhook),
)
def stripe_webhook(
    body: Annotated[bytes, Depends(raw_body)],
    session: DbSession,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookAck:
    """Stripe's webhook: the signature is the authentication. Each event is applied once."""
    event = verify_webhook(body, stripe_signature)
    outcome = flows.receive_event(session, event)
    return WebhookAck(received=True, outcome=outcome)


@router.get("", response_model=Page[PaymentOut])
def list_payments(
    actor: AdminActor,
    session: DbSession,
    order_id: Annotated[uuid.UUID | None, Query()] = None,
    refunded_after_fulfilment: Annotated[bool | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PaymentOut]:
    """Every payment, newest first (admins). `refunded_after_fulfilment=true` lists those
    refunded in full at Stripe after their order shipped, for follow-up."""
    payments = repository.list_payments(
        session,
        order_id=order_id,
        refunded_after_fulfilment=refunded_after_fulfilment,
        limit=limit,
        cursor=cursor,
    )
    return payments.map(PaymentOut.model_validate).page()
