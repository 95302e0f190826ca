"""Products: the catalog admins manage and doctors order from."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor
from app.audit import service as audit
from app.catalog.schemas import CODE_FIELDS, ProductCreate, ProductUpdate
from app.errors import Conflict, DuplicateValue, NotFound
from app.inventory import repository as stock
from app.models import Product
from app.pagination import Keyset, KeysetPage
from app.pharmacy.service import ensure_pharmacy_exists

AUDITED_FIELDS = (
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "par_level",
    "reorder_quantity",
    "requires_prescription",
    "perishable",
    "active",
    "rxnorm_code",
    "ndc_code",
    "pharmacy_id",
)


def product_fields(product: Product) -> dict[str, Any]:
    return {field: getattr(product, field) for field in AUDITED_FIELDS}


def get_product(session: Session, product_id: uuid.UUID, *, for_update: bool = False) -> Product:
    product = locks.product(session, product_id) if for_update else session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    return product


def _sku_taken(session: Session, sku: str, exclude: uuid.UUID | None = None) -> bool:
    query = select(Product.id).where(Product.sku == sku)
    if exclude is not None:
        query = query.where(Product.id != exclude)
    return session.scalar(query) is not None


def create_product(session: Session, actor: Actor, data: ProductCreate) -> Product:
    if _sku_taken(session, data.sku):
        raise DuplicateValue(f"a product with SKU {data.sku} already exists", field="sku")
    ensure_pharmacy_exists(session, data.pharmacy_id)
    product = Product(**data.model_dump(), currency="usd", active=True)
    session.add(product)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # lost a race with a concurrent create of the same SKU
        raise DuplicateValue(f"a product with SKU {data.sku} already exists", field="sku") from exc
    session.refresh(product)
    audit.record(
        session, actor, "product.created", "product", product.id, after=product_fields(product)
    )
    return product


def update_product(
    session: Session, actor: Actor, product_id: uuid.UUID, data: ProductUpdate
) -> Product:
    product = get_product(session, product_id, for_update=True)
    # `null` leaves a field as it is, except the optional codes and pharmacy, which it clears.
    changes = {
        k: v
        for k, v in data.model_dump(exclude_unset=True).items()
        if v is not None or k in CODE_FIELDS
    }
    if changes.get("pharmacy_id") is not None:
        ensure_pharmacy_exists(session, changes["pharmacy_id"])
    if "sku" in changes and _sku_taken(session, changes["sku"], exclude=product.id):
        raise DuplicateValue(f"a product with SKU {changes['sku']} already exists", field="sku")
    if changes.get("perishable") and not product.perishable:
        undated = stock.undated_lot_count(session, product.id)
        if undated:
            raise Conflict(
                f"{undated} lot(s) of this product have no expiration date;"
                " a perishable product needs one on every lot"
            )
    before = product_fields(product)
    for field, value in changes.items():
        setattr(product, field, value)
    after = product_fields(product)
    if after != before:
        audit.record(
            session, actor, "product.updated", "product", product.id, before=before, after=after
        )
    return product


def remove_product(
    session: Session, actor: Actor, product_id: uuid.UUID
) -> Literal["deleted", "archived"]:
    """Delete a product without history; archive one with lots so the history stays whole."""
    product = get_product(session, product_id, for_update=True)
    before = product_fields(product)
    if stock.has_lots(session, product.id):
        if product.active:
            product.active = False
            audit.record(
                session,
                actor,
                "product.archived",
                "product",
                product.id,
                before=before,
                after=product_fields(product),
            )
        return "archived"
    session.delete(product)
    session.flush()
    audit.record(session, actor, "product.deleted", "product", product_id, before=before)
    return "deleted"


BY_SKU = Keyset(Product.sku)


def list_products(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    active: bool | None,
    search: str | None,
    prescription: bool | None = None,
) -> KeysetPage[tuple[Product, int]]:
    """A page of products ordered by SKU, each with its sellable quantity."""
    query = select(Product, stock.sellable_quantity_of(Product.id))
    if active is not None:
        query = query.where(Product.active.is_(active))
    if prescription is not None:
        query = query.where(Product.requires_prescription.is_(prescription))
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Product.sku.ilike(pattern), Product.name.ilike(pattern)))
    page = BY_SKU.rows(session, query, limit=limit, cursor=cursor)
    return page.map(lambda row: (row[0], int(row[1])))


def product_with_quantity(session: Session, product: Product) -> tuple[Product, int]:
    available = session.scalar(select(stock.sellable_quantity_of(product.id)))
    return product, int(available or 0)
