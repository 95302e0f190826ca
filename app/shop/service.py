"""The storefront's rules: what a cart may hold, and the patient's "my orders" links.

A "my orders" link follows the payment links' rules (app/checkout/service.py): a random token of
192 bits of which only the SHA-256 is stored, a lifetime, revocation (a new link replaces the
earlier ones of the same e-mail), and an exchange for a short-lived signed cookie on first use.
It is issued only when the e-mail and the date of birth match a patient; the page that asks for
it answers the same either way.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import phi
from app.actor import Actor, Role
from app.audit import service as audit
from app.catalog.service import product_with_quantity
from app.checkout.service import StatusText, status_text, token_hash
from app.config import get_settings
from app.errors import Conflict, NotFound, Unprocessable
from app.models import (
    Order,
    OrderItem,
    Patient,
    PatientAccessLink,
    Payment,
    PharmacySubmission,
    Product,
)
from app.models.base import utcnow
from app.models.status import PharmacySubmissionStatus
from app.notifications import flows as notifications
from app.notifications.templates import order_reference
from app.patients.service import decrypt_patient
from app.shop.cookies import MAX_CART_LINES, MAX_QUANTITY, Cart


# -- the cart -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CartLine:
    product: Product
    quantity: int
    available: bool

    @property
    def line_cents(self) -> int:
        return self.product.price_cents * self.quantity


def orderable(session: Session, product_id: uuid.UUID) -> tuple[Product, int]:
    """An active, non-prescription product with its sellable quantity; NotFound otherwise
    (a prescription product is as unknown here as a missing one)."""
    product = session.get(Product, product_id)
    if product is None or not product.active or product.requires_prescription:
        raise NotFound("product", product_id)
    return product_with_quantity(session, product)


def add_to_cart(session: Session, cart: Cart, product_id: uuid.UUID, quantity: int) -> Cart:
    """The cart with `quantity` more of the product: refused when it is out of stock, when the
    cart already holds its limit of products, or past the quantity one order may hold."""
    product, available = orderable(session, product_id)
    if available <= 0:
        raise Conflict(f"{product.name} is out of stock and cannot be added")
    if product_id not in cart and len(cart) >= MAX_CART_LINES:
        raise Unprocessable(f"a cart holds at most {MAX_CART_LINES} different products")
    total = cart.get(product_id, 0) + quantity
    if quantity < 1 or total > MAX_QUANTITY:
        raise Unprocessable(f"at most {MAX_QUANTITY} of one product per order", field="quantity")
    return {**cart, product_id: total}


def set_quantity(cart: Cart, product_id: uuid.UUID, quantity: int) -> Cart:
    """The cart with the product's quantity changed; 0 removes it."""
    if product_id not in cart:
        raise NotFound("cart line", product_id)
    if not 0 <= quantity <= MAX_QUANTITY:
        raise Unprocessable(f"a quantity from 0 to {MAX_QUANTITY}", field="quantity")
    changed = dict(cart)
    if quantity == 0:
        del changed[product_id]
    else:
        changed[product_id] = quantity
    return changed


def cart_lines(session: Session, cart: Cart) -> list[CartLine]:
    """The cart's products as they are now; products withdrawn since are left out."""
    lines = []
    for product_id, quantity in cart.items():
        try:
            product, available = orderable(session, product_id)
        except NotFound:
            continue
        lines.append(CartLine(product, quantity, available >= quantity))
    return sorted(lines, key=lambda line: line.product.name)


# -- "my orders" links --------------------------------------------------------------------------
def _identity_hash(email: str, date_of_birth: date) -> str:
    normalised = phi.normalise_email(email)
    return phi.lookup_hash(f"patient-access:{normalised}:{date_of_birth.isoformat()}")


def access_actor(link: PatientAccessLink, client_address: str | None) -> Actor:
    """The patient acts through their "my orders" link; the audit log names the link."""
    return Actor(
        subject=f"orders-link:{link.id}", role=Role.CHECKOUT_LINK, client_address=client_address
    )


def orders_url(token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}/my-orders/{token}"


def request_access(
    session: Session, email: str, date_of_birth: date, client_address: str | None
) -> bool:
    """E-mail a "my orders" link if a patient has this e-mail and date of birth (earlier links
    of the e-mail are revoked). Returns whether one was sent; the caller must not tell."""
    email_hash = phi.lookup_hash(phi.normalise_email(email))
    identity = _identity_hash(email, date_of_birth)
    matched = [
        patient
        for patient in session.scalars(
            select(Patient).where(Patient.email_hash == email_hash).order_by(Patient.id)
        )
        if decrypt_patient(patient).date_of_birth == date_of_birth
    ]
    if not matched:
        return False
    session.execute(
        update(PatientAccessLink)
        .where(PatientAccessLink.email_hash == email_hash, PatientAccessLink.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    token = secrets.token_urlsafe(24)
    link = PatientAccessLink(
        id=uuid.uuid4(),
        token_hash=token_hash(token),
        email_hash=email_hash,
        identity_hash=identity,
        expires_at=utcnow() + timedelta(minutes=get_settings().patient_access_link_minutes),
    )
    session.add(link)
    stored_email = decrypt_patient(matched[0]).email
    notifications.orders_link_requested(
        session, stored_email, link.id, orders_url(token), link.expires_at
    )
    actor = access_actor(link, client_address)
    for patient in matched:
        audit.record(
            session,
            actor,
            "patient_access_link.issued",
            "patient",
            patient.id,
            after={"link_id": link.id, "expires_at": link.expires_at},
        )
    return True


def find_access_link(session: Session, token: str) -> PatientAccessLink | None:
    if not token or len(token) > 128:
        return None
    return session.scalar(
        select(PatientAccessLink).where(PatientAccessLink.token_hash == token_hash(token))
    )


def access_link_valid(link: PatientAccessLink | None) -> bool:
    return link is not None and link.revoked_at is None and link.expires_at > utcnow()


def mark_used(link: PatientAccessLink) -> None:
    if link.first_used_at is None:
        link.first_used_at = utcnow()


PHARMACY_PROGRESS = {
    PharmacySubmissionStatus.PENDING: "Waiting to be sent to the pharmacy",
    PharmacySubmissionStatus.SENDING: "Being sent to the pharmacy",
    PharmacySubmissionStatus.SUBMITTED: "Received by the pharmacy",
    PharmacySubmissionStatus.ACCEPTED: "Accepted by the pharmacy",
    PharmacySubmissionStatus.REJECTED: "Refused by the pharmacy; the clinic will contact you",
    PharmacySubmissionStatus.DISPENSED: "Dispensed by the pharmacy",
    PharmacySubmissionStatus.CANCELLED: "Cancelled at the pharmacy",
    PharmacySubmissionStatus.DEAD_LETTER: "Delayed; the clinic is looking into it",
}


@dataclass(frozen=True)
class OrderSummary:
    reference: str
    placed_at: datetime
    status: StatusText
    items: list[tuple[str, int]]
    total_cents: int
    pharmacy: list[str]


def orders_of(
    session: Session, link: PatientAccessLink, client_address: str | None, *, limit: int = 50
) -> list[OrderSummary]:
    """The orders of the patients the link opens (newest first), each read recorded."""
    patient_ids = [
        patient.id
        for patient in session.scalars(select(Patient).where(Patient.email_hash == link.email_hash))
        if _identity_hash(decrypt_patient(patient).email, decrypt_patient(patient).date_of_birth)
        == link.identity_hash
    ]
    if not patient_ids:
        return []
    orders = list(
        session.scalars(
            select(Order)
            .where(Order.patient_id.in_(patient_ids))
            .order_by(Order.created_at.desc(), Order.id)
            .limit(limit)
        )
    )
    ids = [order.id for order in orders]
    items: dict[uuid.UUID, list[tuple[str, int]]] = {}
    for order_id, name, quantity in session.execute(
        select(OrderItem.order_id, Product.name, OrderItem.quantity)
        .join(Product, Product.id == OrderItem.product_id)
        .where(OrderItem.order_id.in_(ids))
        .order_by(Product.name)
    ):
        items.setdefault(order_id, []).append((name, quantity))
    payments: dict[uuid.UUID, list[Payment]] = {}
    for payment in session.scalars(select(Payment).where(Payment.order_id.in_(ids))):
        payments.setdefault(payment.order_id, []).append(payment)
    pharmacy: dict[uuid.UUID, list[str]] = {}
    for order_id, status in session.execute(
        select(PharmacySubmission.order_id, PharmacySubmission.status)
        .where(PharmacySubmission.order_id.in_(ids))
        .order_by(PharmacySubmission.created_at)
    ):
        pharmacy.setdefault(order_id, []).append(
            PHARMACY_PROGRESS.get(PharmacySubmissionStatus(status), status)
        )
    actor = access_actor(link, client_address)
    for order in orders:
        audit.record(session, actor, "order.read", "order", order.id)
    return [
        OrderSummary(
            reference=order_reference(order.id),
            placed_at=order.created_at,
            status=status_text(order, payments.get(order.id, [])),
            items=items.get(order.id, []),
            total_cents=order.total_cents,
            pharmacy=pharmacy.get(order.id, []),
        )
        for order in orders
    ]
