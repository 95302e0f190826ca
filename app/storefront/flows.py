"""A patient orders for themselves: the storefront's own rules, then the one order flow."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.config import get_settings
from app.errors import InsufficientStock
from app.models import Product
from app.orders import flows as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.patients import service as patients
from app.patients.schemas import PatientCreate
from app.storefront.schemas import SelfOrderCreate
from app.storefront.service import SELF_ORDER, PrescriptionRequired


def place_self_order(
    session: Session, data: SelfOrderCreate, client_address: str | None
) -> orders.PlacedOrder:
    """Refuse prescription products, find or add the patient (never changing a stored record),
    then place the order with its first checkout link; the stock level stays private."""
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
        placed = orders.place_order(
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
    return placed
