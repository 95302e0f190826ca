"""The public storefront: non-prescription products a patient may order without a doctor."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.catalog.service import list_products
from app.config import get_settings
from app.errors import Forbidden, InsufficientStock
from app.models import Order, Product
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.pagination import KeysetPage
from app.patients import service as patients
from app.patients.schemas import PatientCreate
from app.storefront.schemas import PublicProduct, SelfOrderCreate

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
    session: Session, *, limit: int, cursor: str | None
) -> KeysetPage[PublicProduct]:
    """Active, non-prescription products, by SKU."""
    products = list_products(
        session, limit=limit, cursor=cursor, active=True, search=None, prescription=False
    )
    return products.map(lambda row: _public(*row))


def place_self_order(session: Session, data: SelfOrderCreate, client_address: str | None) -> Order:
    product_ids = {line.product_id for line in data.items}
    prescription = session.scalars(
        select(Product.sku).where(Product.id.in_(product_ids), Product.requires_prescription)
    ).all()
    if prescription:
        raise PrescriptionRequired(
            "prescription products can only be ordered by a doctor: " + ", ".join(prescription),
            field="items",
        )
    actor = Actor(subject=SELF_ORDER.subject, role=SELF_ORDER.role, client_address=client_address)
    patient = patients.self_order_patient(
        session,
        actor,
        PatientCreate(
            name=data.name, email=data.email, phone=data.phone, date_of_birth=data.date_of_birth
        ),
    )
    window = timedelta(minutes=get_settings().self_order_payment_ttl_minutes)
    try:
        created = orders.create_order(
            session,
            actor,
            OrderCreate(
                patient_id=patient.id,
                items=[OrderLine(product_id=i.product_id, quantity=i.quantity) for i in data.items],
            ),
            payment_window=window,
        )
    except InsufficientStock as exc:
        # Staff see how many units are left; the public learns only that this order cannot be
        # filled, not the stock level.
        sku = exc.extra.get("sku")
        raise InsufficientStock(
            f"{sku} is not available in the quantity asked for; order fewer or try again later"
            if sku
            else "the stock changed while ordering; try again",
            **({"product_id": exc.extra["product_id"], "sku": sku} if sku else {}),
        ) from None
    return created.order
