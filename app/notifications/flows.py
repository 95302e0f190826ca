"""What the patient is told, and when: each message queued in the transaction of the event
that causes it. Messages carry a link and the order's status, never health details."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.models import Order, Patient
from app.notifications import service as notifications
from app.notifications.templates import order_reference
from app.patients.service import decrypt_patient


def _patient_email(session: Session, order: Order) -> str:
    patient = session.get(Patient, order.patient_id)
    assert patient is not None
    return decrypt_patient(patient).email


def checkout_link_issued(session: Session, order: Order, link_id: object, url: str) -> None:
    notifications.queue_email(
        session,
        to=_patient_email(session, order),
        template="checkout_link",
        context={
            "checkout_url": url,
            "expires_at": order.expires_at.isoformat(),
            "order_reference": order_reference(order.id),
        },
        dedupe_key=f"checkout-link-{link_id}",
    )


def payment_received(session: Session, order: Order, status_url: str) -> None:
    notifications.queue_email(
        session,
        to=_patient_email(session, order),
        template="payment_received",
        context={"order_reference": order_reference(order.id), "status_url": status_url},
        dedupe_key=f"payment-received-{order.id}",
    )


def order_cancelled(session: Session, order: Order, *, refunded: bool, status_url: str) -> None:
    notifications.queue_email(
        session,
        to=_patient_email(session, order),
        template="order_cancelled",
        context={
            "order_reference": order_reference(order.id),
            "refunded": "yes" if refunded else "no",
            "status_url": status_url,
        },
        dedupe_key=f"order-cancelled-{order.id}",
    )


def orders_link_requested(
    session: Session, email: str, link_id: object, url: str, expires_at: datetime
) -> None:
    """The "my orders" link a patient asked for, to the address they gave (a known one)."""
    notifications.queue_email(
        session,
        to=email,
        template="orders_link",
        context={"orders_url": url, "expires_at": expires_at.isoformat()},
        dedupe_key=f"orders-link-{link_id}",
    )
