from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.actor import Role
from app.catalog import service
from app.catalog.schemas import ProductCreate, ProductOut, ProductRemoval, ProductUpdate
from app.db import DbSession
from app.errors import Conflict, DuplicateValue, NotFound, problem_responses
from app.models import Product
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor, StaffActor

router = APIRouter(prefix="/products", tags=["catalog"])


def _out(product: Product, available: int) -> ProductOut:
    return ProductOut.model_validate({**product.__dict__, "quantity_available": available})


@router.get("", response_model=Page[ProductOut])
def list_products(
    actor: StaffActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
    active: Annotated[bool | None, Query(description="Admins only: filter by state")] = None,
    q: Annotated[
        str | None,
        Query(max_length=100, description="Search in SKU and name"),
    ] = None,
) -> Page[ProductOut]:
    """Products ordered by SKU. Doctors see active products only."""
    if actor.role != Role.ADMIN:
        active = True
    products = service.list_products(session, limit=limit, cursor=cursor, active=active, search=q)
    return products.map(lambda row: _out(*row)).page()


@router.post(
    "",
    response_model=ProductOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(DuplicateValue, NotFound),
)
def create_product(data: ProductCreate, actor: AdminActor, session: DbSession) -> ProductOut:
    product = service.create_product(session, actor, data)
    return _out(product, 0)


@router.get("/{product_id}", response_model=ProductOut)
def get_product(product_id: uuid.UUID, actor: StaffActor, session: DbSession) -> ProductOut:
    product = service.get_product(session, product_id)
    if not product.active and actor.role != Role.ADMIN:
        raise NotFound("product", product_id)
    return _out(*service.product_with_quantity(session, product))


@router.patch(
    "/{product_id}",
    response_model=ProductOut,
    responses=problem_responses(DuplicateValue, Conflict, NotFound),
)
def update_product(
    product_id: uuid.UUID, data: ProductUpdate, actor: AdminActor, session: DbSession
) -> ProductOut:
    product = service.update_product(session, actor, product_id, data)
    return _out(*service.product_with_quantity(session, product))


@router.delete(
    "/{product_id}",
    response_model=ProductRemoval,
    response_description=(
        "`deleted`: the product is gone (its GET answers 404). `archived`: it had lots, whose "
        "history must stay; it is deactivated and stays readable by admins (GET answers 200 "
        "with `active: false`), hidden from doctors and the public catalog."
    ),
)
def remove_product(product_id: uuid.UUID, actor: AdminActor, session: DbSession) -> ProductRemoval:
    """Deletes a product that never had stock; archives (deactivates) one that did, because its
    lots and stock movements keep referring to it. An archived product stays readable by admins
    after this DELETE and can be restored with `PATCH {"active": true}`."""
    outcome = service.remove_product(session, actor, product_id)
    return ProductRemoval(id=product_id, outcome=outcome)
