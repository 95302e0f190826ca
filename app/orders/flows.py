"""An order's life, one business operation per function, with everything it causes.

The API, the storefront, the worker, the CLI and payment events all call these; the state
changes and their rules stay in `app.orders.service`. Each flow runs in the caller's
transaction (never commits), so an operation and what it causes (a checkout link, the patient's
e-mail, a refund in the outbox) are written together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.actor import Actor
from app.checkout import service as checkout
from app.integrations.stripe import refunds
from app.models import Order
from app.models.base import utcnow
from app.models.status import CancellationReason, OrderStatus
from app.notifications import flows as notifications
from app.orders import service, state
from app.orders.schemas import OrderCreate, OrderLine
from app.pharmacy import flows as pharmacy_flows
from app.pharmacy import service as pharmacy


@dataclass(frozen=True)
class PlacedOrder:
    created: service.CreatedOrder
    checkout_url: str

    @property
    def order(self) -> Order:
        return self.created.order


def place_order(
    session: Session, actor: Actor, data: OrderCreate, *, payment_window: timedelta | None = None
) -> PlacedOrder:
    """A new order (a doctor's, or a patient's own from the storefront) with its stock reserved
    and its first checkout link, e-mailed to the patient."""
    created = service.create_order(session, actor, data, payment_window=payment_window)
    token = checkout.issue_link(session, actor, created.order, first=True)
    return PlacedOrder(created, checkout.checkout_url(token))


def edit_order(
    session: Session, actor: Actor, order_id: uuid.UUID, lines: list[OrderLine]
) -> Order:
    """Replace a pending order's items; stock is re-reserved all or nothing."""
    return service.edit_items(session, actor, order_id, lines)


def issue_checkout_link(session: Session, actor: Actor, order_id: uuid.UUID) -> tuple[Order, str]:
    """A new payment link for a pending order, e-mailed to the patient; earlier links stop
    working. Returns the order and the link's URL."""
    order = service.get_visible_order(session, actor, order_id, for_update=True)
    state.ensure_payable(order)
    token = checkout.issue_link(session, actor, order)
    return order, checkout.checkout_url(token)


def revoke_checkout_links(session: Session, actor: Actor, order_id: uuid.UUID) -> None:
    order = service.get_visible_order(session, actor, order_id, for_update=True)
    checkout.revoke_links(session, actor, order)


def cancel_order(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    reason: CancellationReason = CancellationReason.OTHER,
    note: str | None = None,
) -> Order:
    """Cancel a pending or paid order: stock released, a paid one refunded through the outbox,
    the patient e-mailed a link to the status page.

    A paid order whose prescriptions a pharmacy holds is cancelled there first, with no lock
    held while the pharmacy answers; only then is the order locked, cancelled and its refund
    queued. A pharmacy that has dispensed (409), refuses (409) or cannot be reached (503)
    stops the cancellation with nothing changed: the money is never given back for medicine
    that may be handed out.
    """
    current = service.get_visible_order(session, actor, order_id)
    told: frozenset[uuid.UUID] = frozenset()
    if current.status == OrderStatus.PAID:
        told = pharmacy_flows.tell_pharmacies_order_cancelled(session, actor, order_id)
    session.expire(current)  # re-read under the lock below
    order = service.get_visible_order(session, actor, order_id, for_update=True)
    return _cancel(session, actor, order, reason, note, told=told)


def _cancel(
    session: Session,
    actor: Actor,
    order: Order,
    reason: CancellationReason,
    note: str | None = None,
    *,
    told: frozenset[uuid.UUID] | None = None,
) -> Order:
    """`told`: the submissions their pharmacies cancelled just before; None when nobody could
    be asked first (a refund made at Stripe): what pharmacies hold gets a queued cancel."""
    pharmacy.withdraw(session, actor, order.id, told)
    was = service.cancel(session, actor, order, reason, note)
    refunded = was == OrderStatus.PAID and refunds.refund_paid_order(session, order.id) > 0
    status_link = checkout.issue_link(session, actor, order, email=False)
    notifications.order_cancelled(
        session, order, refunded=refunded, status_url=checkout.checkout_url(status_link)
    )
    return order


def expire_unpaid_orders(
    session: Session, actor: Actor, *, now: datetime | None = None, batch: int = 200
) -> int:
    """Cancel pending orders whose payment window has closed, releasing their stock; returns
    how many. Orders a concurrent payment holds are left for the next run."""
    orders = service.claim_expired_orders(session, now=now or utcnow(), batch=batch)
    for order in orders:
        _cancel(session, actor, order, CancellationReason.PAYMENT_EXPIRED)
    return len(orders)


def mark_paid(session: Session, actor: Actor, order: Order) -> Order:
    """A payment settled the (locked) order: it is paid, its prescription items are queued for
    their pharmacies (same transaction), and the patient is e-mailed a link to its status
    page."""
    service.mark_paid(session, actor, order.id)
    pharmacy.queue_paid_order(session, actor, order)
    status_link = checkout.issue_link(session, actor, order, email=False)
    notifications.payment_received(session, order, checkout.checkout_url(status_link))
    return order


def cancel_refunded_at_stripe(session: Session, actor: Actor, order: Order) -> Order:
    """A paid order's money was given back in full at Stripe: it is cancelled (no refund of
    our own is queued, Stripe's is recorded). The order is already locked and the money gone,
    so the pharmacies are not asked first: their cancels are queued (`pharmacy.withdraw`)."""
    locked = service.get_visible_order(session, actor, order.id, for_update=True)
    return _cancel(session, actor, locked, CancellationReason.REFUNDED_AT_STRIPE)


def fulfil_order(session: Session, actor: Actor, order_id: uuid.UUID) -> Order:
    """Ship a paid order: its reserved units leave stock."""
    return service.fulfil_order(session, actor, order_id)
