"""The order state machine, in one place.

pending -> paid -> fulfilled
pending -> cancelled
paid    -> cancelled   (refunded by the payments flow)
"""

from __future__ import annotations

from datetime import datetime

from app.errors import InvalidStateTransition
from app.models import Order
from app.models.status import OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED}),
    OrderStatus.FULFILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
TIMESTAMP_OF = {
    OrderStatus.PAID: "paid_at",
    OrderStatus.FULFILLED: "fulfilled_at",
    OrderStatus.CANCELLED: "cancelled_at",
}
HOLDS_STOCK = frozenset({OrderStatus.PENDING, OrderStatus.PAID})


def ensure_can_become(order: Order, target: str) -> None:
    """Refuse a transition the machine does not allow (409 invalid-state-transition).

    `target` is an `OrderStatus`; a plain string equal to one is accepted alike.
    """
    if target not in TRANSITIONS[OrderStatus(order.status)]:
        raise InvalidStateTransition(
            f"an order that is {order.status} cannot become {target}",
            current_status=order.status,
            requested_status=target,
        )


def ensure_payable(order: Order) -> None:
    """Refuse unless the order is pending: only then may it be paid, edited or given a new link.

    The refusal is the one a request to mark it paid gets (409, `requested_status` paid).
    """
    ensure_can_become(order, OrderStatus.PAID)


def move_to(order: Order, target: str, at: datetime) -> None:
    ensure_can_become(order, target)
    order.status = target
    setattr(order, TIMESTAMP_OF[OrderStatus(target)], at)
    order.updated_at = at
