"""The order state machine, in one place.

pending -> paid -> fulfilled
pending -> cancelled
paid    -> cancelled   (refunded by the payments flow)
"""

from __future__ import annotations

from datetime import datetime

from app.errors import InvalidStateTransition
from app.models import Order

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"paid", "cancelled"}),
    "paid": frozenset({"fulfilled", "cancelled"}),
    "fulfilled": frozenset(),
    "cancelled": frozenset(),
}
TIMESTAMP_OF = {"paid": "paid_at", "fulfilled": "fulfilled_at", "cancelled": "cancelled_at"}
HOLDS_STOCK = frozenset({"pending", "paid"})


def ensure_can_become(order: Order, target: str) -> None:
    if target not in TRANSITIONS[order.status]:
        raise InvalidStateTransition(
            f"an order that is {order.status} cannot become {target}",
            current_status=order.status,
            requested_status=target,
        )


def move_to(order: Order, target: str, at: datetime) -> None:
    ensure_can_become(order, target)
    order.status = target
    setattr(order, TIMESTAMP_OF[target], at)
    order.updated_at = at
