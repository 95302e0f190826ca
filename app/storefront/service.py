"""The public storefront: non-prescription products a patient may order without a doctor."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.actor import Actor
from app.catalog.service import list_products
from app.errors import Forbidden
from app.models import Product
from app.pagination import KeysetPage
from app.storefront.schemas import PublicProduct

SELF_ORDER = Actor.system("self-order")


class PrescriptionRequired(Forbidden):
    """A prescription product in a self-order: only a doctor may order it (a 403, because the
    same request is valid from a doctor; the schema cannot tell prescription products apart)."""

    slug = "prescription-required"
    title = "Only a doctor can order this product"


def _public(product: Product, available: int) -> PublicProduct:
    return PublicProduct(
        id=product.id,
        sku=product.sku,
        name=product.name,
        description=product.description,
        price_cents=product.price_cents,
        currency=product.currency,
        in_stock=available > 0,
    )


def public_products(
    session: Session, *, limit: int, cursor: str | None, search: str | None = None
) -> KeysetPage[PublicProduct]:
    """Active, non-prescription products, by SKU (those whose SKU or name holds `search`)."""
    products = list_products(
        session, limit=limit, cursor=cursor, active=True, search=search, prescription=False
    )
    return products.map(lambda row: _public(*row))
