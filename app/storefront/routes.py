from __future__ import annotations

from fastapi import APIRouter, Request, status

from app import http
from app.db import DbSession
from app.errors import (
    Conflict,
    DuplicateValue,
    InsufficientStock,
    NotFound,
    problem_responses,
)
from app.notifications.service import InvalidRecipient
from app.pagination import Cursor, Limit, Page
from app.ratelimit import Bucket, rate_limited
from app.security import Public
from app.storefront import flows, service
from app.storefront.schemas import PublicProduct, SelfOrderCreate, SelfOrderCreated

router = APIRouter(prefix="/public", tags=["storefront"], dependencies=[Public])


@router.get(
    "/products",
    response_model=Page[PublicProduct],
    dependencies=[rate_limited(Bucket.PUBLIC_CATALOG)],
)
def public_products(
    session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Page[PublicProduct]:
    """Products anyone may order without a prescription."""
    return service.public_products(session, limit=limit, cursor=cursor).page()


@router.post(
    "/orders",
    response_model=SelfOrderCreated,
    status_code=status.HTTP_201_CREATED,
    dependencies=[rate_limited(Bucket.SELF_ORDER)],
    responses=problem_responses(
        service.PrescriptionRequired,
        NotFound,
        Conflict,
        DuplicateValue,
        InsufficientStock,
        InvalidRecipient,
    ),
)
def place_order(data: SelfOrderCreate, request: Request, session: DbSession) -> SelfOrderCreated:
    """A patient orders for themselves; pay through the returned link. No prescription items."""
    client = http.client_address(request)
    placed = flows.place_self_order(session, data, client)
    order = placed.order
    return SelfOrderCreated(
        order_id=order.id,
        total_cents=order.total_cents,
        currency=order.currency,
        expires_at=order.expires_at,
        checkout_url=placed.checkout_url,
    )
