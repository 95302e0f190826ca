"""The storefront's operations with side effects: a cart becomes an order (the one self-order
flow), a patient asks for their "my orders" link."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import CheckoutLink
from app.storefront import flows as storefront
from app.storefront.schemas import SelfOrderCreate


def place_cart_order(
    session: Session, data: SelfOrderCreate, client_address: str | None
) -> tuple[uuid.UUID, uuid.UUID]:
    """Place the self-order in a savepoint, so a refusal (stock gone meanwhile, an address the
    mailer refuses) leaves nothing written. Returns the order's id and its checkout link's."""
    with session.begin_nested():
        placed = storefront.place_self_order(session, data, client_address)
        link_id = session.scalar(
            select(CheckoutLink.id).where(CheckoutLink.order_id == placed.order.id)
        )
    assert link_id is not None
    return placed.order.id, link_id
