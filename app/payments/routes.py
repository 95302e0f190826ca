from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy import select, tuple_

from app.db import DbSession
from app.models import Payment
from app.orders.service import get_visible_order
from app.pagination import CREATED_AT_AND_ID, Cursor, Limit, Page, decode_cursor, page_of
from app.payments import service
from app.payments.schemas import IntentOut, IntentRequest, PaymentOut, WebhookAck
from app.security import AdminActor, Public, StaffActor

router = APIRouter(prefix="/payments", tags=["payments"])


@router.post("/create-intent", response_model=IntentOut)
def create_intent(data: IntentRequest, actor: StaffActor, session: DbSession) -> IntentOut:
    """Create (or reuse) the Stripe PaymentIntent for a pending order's current total."""
    order = get_visible_order(session, actor, data.order_id)
    intent_id, secret = service.create_or_reuse_intent(session, actor, order)
    return IntentOut(payment_intent_id=intent_id, client_secret=secret)


async def raw_body(request: Request) -> bytes:
    """The exact bytes Stripe signed (a parsed and re-serialised body would not verify)."""
    return await request.body()


@router.post("/webhook", response_model=WebhookAck, dependencies=[Public])
def stripe_webhook(
    body: Annotated[bytes, Depends(raw_body)],
    session: DbSession,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookAck:
    """Stripe's webhook: the signature is the authentication. Each event is applied once."""
    event = service.verify_webhook(body, stripe_signature)
    outcome = service.receive_event(session, event)
    return WebhookAck(received=True, outcome=outcome)


@router.get("", response_model=Page[PaymentOut])
def list_payments(
    actor: AdminActor,
    session: DbSession,
    order_id: Annotated[uuid.UUID | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PaymentOut]:
    """Every payment, newest first (admins)."""
    query = select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
    if order_id:
        query = query.where(Payment.order_id == order_id)
    if cursor:
        created_at, payment_id = decode_cursor(cursor, 2, parse=CREATED_AT_AND_ID)
        query = query.where(tuple_(Payment.created_at, Payment.id) < (created_at, payment_id))
    rows = list(session.scalars(query))
    items = [PaymentOut.model_validate(p) for p in rows]
    return page_of(items, rows, limit, lambda p: (p.created_at.isoformat(), p.id))
