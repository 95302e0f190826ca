"""Patient checkout links: issue, exchange for a cookie, date-of-birth check, lock, revoke.

A link carries a random token of 192 bits; only its SHA-256 is stored. On first use the token is
exchanged for a short-lived signed cookie, so it does not linger in URLs or history. Nothing
personal is shown until the patient has confirmed their date of birth; repeated failures lock
the link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor, Role
from app.audit import service as audit
from app.config import get_settings
from app.models import CheckoutLink, Order, OrderItem, Patient, Payment, Product
from app.models.base import utcnow
from app.models.status import LinkState, OrderStatus, PaymentStatus
from app.notifications import flows
from app.patients.service import decrypt_patient

COOKIE_NAME = "portal_checkout"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def checkout_url(token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}/pay/{token}"


def issue_link(
    session: Session, actor: Actor, order: Order, *, email: bool = True, first: bool = False
) -> str:
    """A new link for the order (earlier ones are revoked). Returns the token, shown once.

    The patient is e-mailed the link (`email=False` for a link that only leads to the status
    page, sent inside another message). `first`: the order is new, so there is nothing to revoke.
    """
    if not first:
        session.execute(
            update(CheckoutLink)
            .where(CheckoutLink.order_id == order.id, CheckoutLink.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    token = secrets.token_urlsafe(24)
    link = CheckoutLink(
        id=uuid.uuid4(),
        order_id=order.id,
        token_hash=token_hash(token),
        expires_at=order.expires_at,
        issued_by=actor.subject,
        failed_attempts=0,
    )
    session.add(link)
    if email:
        flows.checkout_link_issued(session, order, link.id, checkout_url(token))
    audit.record(
        session,
        actor,
        "checkout_link.issued",
        "order",
        order.id,
        after={"link_id": link.id, "expires_at": link.expires_at},
    )
    return token


def revoke_links(session: Session, actor: Actor, order: Order) -> int:
    revoked = len(
        session.execute(
            update(CheckoutLink)
            .where(CheckoutLink.order_id == order.id, CheckoutLink.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(CheckoutLink.id)
        ).all()
    )
    audit.record(
        session, actor, "checkout_link.revoked", "order", order.id, after={"links": revoked}
    )
    return revoked


def state_of(link: CheckoutLink | None, order: Order | None = None) -> LinkState:
    if link is None:
        return LinkState.UNKNOWN
    if link.locked_at is not None:
        return LinkState.LOCKED
    if order is not None and order.status != OrderStatus.PENDING:
        # Paying or cancelling replaces the links; an old one then leads to the status page,
        # not to "ask for a new link" (which would suggest paying again).
        return LinkState.CLOSED
    if link.revoked_at is not None:
        return LinkState.REVOKED
    if link.expires_at <= utcnow():
        return LinkState.EXPIRED
    return LinkState.VALID


def find_by_token(session: Session, token: str) -> CheckoutLink | None:
    if not token or len(token) > 128:
        return None
    return session.scalar(select(CheckoutLink).where(CheckoutLink.token_hash == token_hash(token)))


# -- the cookie ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckoutSession:
    link_id: uuid.UUID
    verified: bool
    expires: int


def _sign(body: str) -> str:
    key = get_settings().checkout_cookie_secret.encode()
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def make_cookie(link_id: uuid.UUID, *, verified: bool) -> str:
    expires = int(time.time()) + get_settings().checkout_cookie_minutes * 60
    body = f"{link_id}.{int(verified)}.{expires}"
    return f"{body}.{_sign(body)}"


def read_cookie(value: str | None) -> CheckoutSession | None:
    if not value or value.count(".") != 3:
        return None
    body, _, signature = value.rpartition(".")
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters (TypeError), and a
    # cookie is whatever the client sends. Such a signature is simply a wrong one.
    if not hmac.compare_digest(signature.encode(), _sign(body).encode()):
        return None
    link_id, verified, expires = body.split(".")
    try:
        session = CheckoutSession(uuid.UUID(link_id), verified == "1", int(expires))
    except ValueError:
        return None
    return session if session.expires > time.time() else None


def link_actor(link: CheckoutLink, client_address: str | None) -> Actor:
    """The patient acts through their link; the audit log names the link, not the person, with
    the role `checkout-link`."""
    return Actor(
        subject=f"checkout-link:{link.id}", role=Role.CHECKOUT_LINK, client_address=client_address
    )


def order_lines(session: Session, order: Order) -> list[tuple[OrderItem, str]]:
    """The order's items with their product names, as the payment page lists them."""
    rows = session.execute(
        select(OrderItem, Product.name)
        .join(Product, Product.id == OrderItem.product_id)
        .where(OrderItem.order_id == order.id)
        .order_by(Product.name)
    ).all()
    return [(item, name) for item, name in rows]


def payments_of(session: Session, order: Order) -> list[Payment]:
    return list(session.scalars(select(Payment).where(Payment.order_id == order.id)))


@dataclass(frozen=True)
class StatusText:
    """An order's status as the patient reads it."""

    headline: str
    explanation: str
    tone: str  # "ok", "bad" or ""


def status_text(order: Order, payments: list[Payment]) -> StatusText:
    """The order's status in the patient's words, from the order and its payments: a bank
    debit shows `processing` until it settles, and a debit that failed says so."""
    refunded = any(p.refunded_cents > 0 for p in payments)
    processing = any(p.status == PaymentStatus.PROCESSING for p in payments)
    debit_failed = any(
        p.status == PaymentStatus.REQUIRES_PAYMENT_METHOD
        and p.method == "us_bank_account"
        and p.failure_reason
        for p in payments
    )
    status = OrderStatus(order.status)
    if status == OrderStatus.PENDING and processing:
        return StatusText(
            "Payment processing",
            "Your bank payment is on its way; this can take a few business days. We will"
            " e-mail you when it has arrived.",
            "",
        )
    if status == OrderStatus.PENDING and debit_failed:
        return StatusText(
            "Bank payment failed",
            "Your bank did not complete the payment, so nothing was taken. Pay again from the"
            " payment link in your e-mail, with a card or another account.",
            "bad",
        )
    return {
        OrderStatus.PENDING: StatusText(
            "Awaiting payment", "Your order is waiting for payment.", ""
        ),
        OrderStatus.PAID: StatusText("Paid", "Thank you. Your order is being prepared.", "ok"),
        OrderStatus.FULFILLED: StatusText(
            "Fulfilled", "Your order has been prepared and sent.", "ok"
        ),
        OrderStatus.CANCELLED: (
            StatusText("Cancelled and refunded", "Your payment was refunded.", "")
            if refunded
            else StatusText("Cancelled", "This order was cancelled.", "")
        ),
    }[status]


def record_details_viewed(
    session: Session, link: CheckoutLink, order: Order, client_address: str | None
) -> None:
    """The payment page decrypted the patient's details and the order's items: PHI reads."""
    actor = link_actor(link, client_address)
    audit.record(session, actor, "order.read", "order", order.id)
    audit.record(session, actor, "patient.read", "patient", order.patient_id)


def record_order_viewed(
    session: Session, link: CheckoutLink, order: Order, client_address: str | None
) -> None:
    """The confirmation listed the order's items: a PHI read."""
    audit.record(session, link_actor(link, client_address), "order.read", "order", order.id)


def check_date_of_birth(
    session: Session, link: CheckoutLink, answer: date, client_address: str | None
) -> bool:
    """Compare with the patient's date of birth; count failures and lock at the limit."""
    # Guesses sent in parallel must each count: read the counters under the link's row lock
    # (a plain read let them all see the same count and lose each other's increments).
    locks.checkout_link(session, link)
    if link.locked_at is not None:
        return False
    order = session.get(Order, link.order_id)
    assert order is not None
    patient = session.get(Patient, order.patient_id)
    assert patient is not None
    actor = link_actor(link, client_address)
    if decrypt_patient(patient).date_of_birth == answer:
        if link.first_used_at is None:
            link.first_used_at = utcnow()
        audit.record(session, actor, "checkout_link.verified", "order", order.id)
        return True
    link.failed_attempts += 1
    limit = get_settings().checkout_max_failed_attempts
    locked = link.failed_attempts >= limit
    if locked:
        link.locked_at = utcnow()
    audit.record(
        session,
        actor,
        "checkout_link.dob_failed",
        "order",
        order.id,
        after={"failed_attempts": link.failed_attempts, "locked": locked},
    )
    return False
