"""Payment queries for the admin views."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Payment
from app.pagination import Keyset, KeysetPage

NEWEST_FIRST = Keyset(Payment.created_at, Payment.id, descending=True)


def list_payments(
    session: Session,
    *,
    order_id: uuid.UUID | None,
    refunded_after_fulfilment: bool | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[Payment]:
    query = select(Payment)
    if order_id:
        query = query.where(Payment.order_id == order_id)
    if refunded_after_fulfilment is not None:
        query = query.where(Payment.refunded_after_fulfilment == refunded_after_fulfilment)
    return NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
