"""Reserving, releasing and consuming stock for orders: the no-oversell mechanism.

- Candidate lots of every product in the order are locked in one statement, in lot-id order, so
  concurrent orders always lock in the same global order and cannot deadlock.
- Lots are taken first-expiry-first-out, skipping lots that are not `available` or that expire
  within the minimum remaining shelf life.
- All takes are one atomic conditional UPDATE (`... WHERE on_hand - reserved >= n` per lot),
  with the lots' CHECK constraints as the backstop, plus one ledger row per lot.
- If any product is short, `InsufficientStock` is raised before anything is written for it; the
  caller's transaction rolls back, so no item of the order keeps a reservation.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    String,
    Uuid,
    and_,
    bindparam,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from app import locks
from app.actor import Actor
from app.errors import InsufficientStock, InvalidStateTransition
from app.inventory.repository import today
from app.inventory.service import record_movement
from app.models import Lot, LotAllocation, OrderItem, Product
from app.models.status import LotStatus, StockMovementReason


def earliest_acceptable_expiry(min_shelf_life_days: int, on: date | None = None) -> date:
    return (on or today()) + timedelta(days=min_shelf_life_days)


def reservable(min_shelf_life_days: int) -> ColumnElement[bool]:
    cutoff = earliest_acceptable_expiry(min_shelf_life_days)
    return and_(
        Lot.status == LotStatus.AVAILABLE,
        or_(Lot.expiration_date.is_(None), Lot.expiration_date >= cutoff),
        Lot.quantity_on_hand > Lot.quantity_reserved,
    )


# Every take of a reservation in one statement: the conditional UPDATE of the (already locked)
# lots, the allocations and one ledger row per lot. A lot without enough left is not updated,
# and then neither its allocations nor its ledger row are written; the caller sees the missing
# lot id and rolls the transaction back. Constant text, so the server prepares it once per
# connection.
TAKE_FROM_LOTS = text(
    """
    WITH wanted AS (
        SELECT * FROM unnest(
            CAST(:order_item_ids AS uuid[]), CAST(:lot_ids AS uuid[]), CAST(:takes AS integer[])
        ) AS wanted (order_item_id, lot_id, take)
    ), per_lot AS (
        SELECT lot_id, sum(take)::integer AS take FROM wanted GROUP BY lot_id
    ), taken AS (
        UPDATE lots SET quantity_reserved = lots.quantity_reserved + per_lot.take
        FROM per_lot
        WHERE lots.id = per_lot.lot_id
          AND lots.quantity_on_hand - lots.quantity_reserved >= per_lot.take
        RETURNING lots.id, per_lot.take
    ), allocated AS (
        INSERT INTO lot_allocations (id, order_item_id, lot_id, quantity)
        SELECT gen_random_uuid(), wanted.order_item_id, wanted.lot_id, wanted.take
        FROM wanted JOIN taken ON taken.id = wanted.lot_id
    ), ledger AS (
        INSERT INTO stock_movements
            (id, lot_id, delta_on_hand, delta_reserved, reason, order_id, actor_subject)
        SELECT gen_random_uuid(), taken.id, 0, taken.take, :reason, :order_id, :actor
        FROM taken ORDER BY taken.id
    )
    SELECT id FROM taken
    """
).bindparams(
    bindparam("order_item_ids", type_=ARRAY(Uuid)),
    bindparam("lot_ids", type_=ARRAY(Uuid)),
    bindparam("takes", type_=ARRAY(Integer)),
    bindparam("order_id", type_=Uuid),
    bindparam("reason", type_=String),
)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Units of one order item reserved from one lot."""

    order_item_id: uuid.UUID
    lot_id: uuid.UUID
    lot_number: str
    expiration_date: date | None
    quantity: int


def _fefo_key(lot: Any) -> tuple[date, object, uuid.UUID]:
    return (lot.expiration_date or date.max, lot.created_at, lot.id)


def _expire_loaded_lots(session: Session, lot_ids: Iterable[uuid.UUID]) -> None:
    """Lots changed by a set-based UPDATE: drop stale counters of any loaded in the session."""
    for lot_id in lot_ids:
        loaded = session.identity_map.get(identity_key(Lot, lot_id))
        if loaded is not None:
            session.expire(loaded)


def reserve(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    items: Iterable[OrderItem],
    products: dict[uuid.UUID, Product],
    *,
    min_shelf_life_days: int,
) -> list[Reservation]:
    """Reserve every item's quantity, first-expiry-first-out, in two statements: lock the
    candidate lots, then take from them (`TAKE_FROM_LOTS`: the conditional UPDATE, the
    allocations and the ledger rows). Raises `InsufficientStock` before writing if any product
    is short."""
    items = sorted(items, key=lambda item: item.product_id)
    product_ids = [item.product_id for item in items]
    lots = session.execute(
        locks.lots_of(
            select(
                Lot.id,
                Lot.product_id,
                Lot.lot_number,
                Lot.expiration_date,
                Lot.created_at,
                Lot.quantity_on_hand,
                Lot.quantity_reserved,
            ).where(Lot.product_id.in_(product_ids), reservable(min_shelf_life_days))
        )
    ).all()
    by_product: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for lot in lots:
        by_product[lot.product_id].append(lot)

    plan: list[Reservation] = []
    for item in items:
        candidates = sorted(by_product[item.product_id], key=_fefo_key)
        available = sum(lot.quantity_on_hand - lot.quantity_reserved for lot in candidates)
        if available < item.quantity:
            product = products[item.product_id]
            raise InsufficientStock(
                f"{product.sku} ({product.name}): {item.quantity} requested, {available} available",
                product_id=str(product.id),
                sku=product.sku,
                requested=item.quantity,
                available=available,
            )
        needed = item.quantity
        for lot in candidates:
            take = min(needed, lot.quantity_on_hand - lot.quantity_reserved)
            if take > 0:
                plan.append(Reservation(item.id, lot.id, lot.lot_number, lot.expiration_date, take))
                needed -= take
            if needed == 0:
                break

    taken = session.execute(
        TAKE_FROM_LOTS,
        {
            "order_item_ids": [r.order_item_id for r in plan],
            "lot_ids": [r.lot_id for r in plan],
            "takes": [r.quantity for r in plan],
            "order_id": order_id,
            "actor": actor.subject,
            "reason": StockMovementReason.RESERVATION,
        },
    ).all()
    lot_ids = {r.lot_id for r in plan}
    if len(taken) != len(lot_ids):  # impossible while we hold the row locks; CHECKs are backstop
        raise InsufficientStock("a lot changed while reserving; try again")
    _expire_loaded_lots(session, lot_ids)
    return sorted(plan, key=lambda r: (r.expiration_date or date.max, r.lot_id))


def _allocations_with_lots(
    session: Session, order_item_ids: list[uuid.UUID]
) -> list[tuple[LotAllocation, Lot]]:
    """The order's allocations with their lots, lots locked in id order."""
    rows = session.execute(
        locks.lots_of(
            select(LotAllocation, Lot)
            .join(Lot, Lot.id == LotAllocation.lot_id)
            .where(LotAllocation.order_item_id.in_(order_item_ids))
        )
    ).all()
    return [(row[0], row[1]) for row in rows]


def release(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    order_item_ids: list[uuid.UUID],
    *,
    delete_allocations: bool = False,
) -> None:
    """Give back the order's reserved units (cancel, expiry, or before re-reserving an edit)."""
    for allocation, lot in _allocations_with_lots(session, order_item_ids):
        session.execute(
            update(Lot)
            .where(Lot.id == lot.id)
            .values(quantity_reserved=Lot.quantity_reserved - allocation.quantity)
        )
        record_movement(
            session,
            actor,
            lot.id,
            delta_reserved=-allocation.quantity,
            reason=StockMovementReason.RELEASE,
            order_id=order_id,
        )
        if delete_allocations:
            session.delete(allocation)
    session.flush()


def consume(
    session: Session, actor: Actor, order_id: uuid.UUID, order_item_ids: list[uuid.UUID]
) -> None:
    """Ship the reserved units: on-hand and reserved both drop. Refused for unusable lots."""
    pairs = _allocations_with_lots(session, order_item_ids)
    for _, lot in pairs:
        if lot.status != LotStatus.AVAILABLE or (
            lot.expiration_date is not None and lot.expiration_date < today()
        ):
            state = lot.status if lot.status != LotStatus.AVAILABLE else LotStatus.EXPIRED
            raise InvalidStateTransition(
                f"lot {lot.lot_number} is {state}; cancel the order or re-order from another lot",
                lot_id=str(lot.id),
                lot_status=state,
            )
    for allocation, lot in pairs:
        session.execute(
            update(Lot)
            .where(Lot.id == lot.id)
            .values(
                quantity_on_hand=Lot.quantity_on_hand - allocation.quantity,
                quantity_reserved=Lot.quantity_reserved - allocation.quantity,
            )
        )
        record_movement(
            session,
            actor,
            lot.id,
            delta_on_hand=-allocation.quantity,
            delta_reserved=-allocation.quantity,
            reason=StockMovementReason.FULFILMENT,
            order_id=order_id,
        )
    session.flush()
