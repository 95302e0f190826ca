"""Reserving, releasing and consuming stock for orders: the no-oversell mechanism.

- Candidate lots of every product in the order are locked in one statement, in lot-id order, so
  concurrent orders always lock in the same global order and cannot deadlock.
- Lots are taken first-expiry-first-out, skipping lots that are not `available` or that expire
  within the minimum remaining shelf life.
- Each take is an atomic conditional UPDATE (`... WHERE on_hand - reserved >= n`), with the
  lots' CHECK constraints as the backstop, plus a ledger row.
- If any product is short, `InsufficientStock` is raised before anything is written for it; the
  caller's transaction rolls back, so no item of the order keeps a reservation.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from app.actor import Actor
from app.errors import InsufficientStock, InvalidStateTransition
from app.inventory.repository import today
from app.inventory.service import record_movement
from app.models import Lot, LotAllocation, OrderItem, Product


def earliest_acceptable_expiry(min_shelf_life_days: int, on: date | None = None) -> date:
    return (on or today()) + timedelta(days=min_shelf_life_days)


def reservable(min_shelf_life_days: int) -> ColumnElement[bool]:
    cutoff = earliest_acceptable_expiry(min_shelf_life_days)
    return and_(
        Lot.status == "available",
        or_(Lot.expiration_date.is_(None), Lot.expiration_date >= cutoff),
        Lot.quantity_on_hand > Lot.quantity_reserved,
    )


def _fefo_key(lot: Lot) -> tuple[date, object, uuid.UUID]:
    return (lot.expiration_date or date.max, lot.created_at, lot.id)


def reserve(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    items: Iterable[OrderItem],
    products: dict[uuid.UUID, Product],
    *,
    min_shelf_life_days: int,
) -> list[LotAllocation]:
    items = sorted(items, key=lambda item: item.product_id)
    product_ids = [item.product_id for item in items]
    lots = session.scalars(
        select(Lot)
        .where(Lot.product_id.in_(product_ids), reservable(min_shelf_life_days))
        .order_by(Lot.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    by_product: dict[uuid.UUID, list[Lot]] = defaultdict(list)
    for lot in lots:
        by_product[lot.product_id].append(lot)

    plan: list[tuple[OrderItem, Lot, int]] = []
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
                plan.append((item, lot, take))
                needed -= take
            if needed == 0:
                break

    allocations: list[LotAllocation] = []
    for item, lot, take in sorted(plan, key=lambda step: step[1].id):
        taken = session.execute(
            update(Lot)
            .where(Lot.id == lot.id, Lot.quantity_on_hand - Lot.quantity_reserved >= take)
            .values(quantity_reserved=Lot.quantity_reserved + take)
            .returning(Lot.id)
        ).first()
        if taken is None:  # impossible while we hold the row lock; the CHECK is the backstop
            raise InsufficientStock(f"lot {lot.lot_number} changed while reserving")
        record_movement(
            session, actor, lot.id, delta_reserved=take, reason="reservation", order_id=order_id
        )
        allocation = LotAllocation(order_item_id=item.id, lot_id=lot.id, quantity=take)
        session.add(allocation)
        allocations.append(allocation)
    session.flush()
    return allocations


def _allocations_with_lots(
    session: Session, order_item_ids: list[uuid.UUID]
) -> list[tuple[LotAllocation, Lot]]:
    """The order's allocations with their lots, lots locked in id order."""
    rows = session.execute(
        select(LotAllocation, Lot)
        .join(Lot, Lot.id == LotAllocation.lot_id)
        .where(LotAllocation.order_item_id.in_(order_item_ids))
        .order_by(Lot.id)
        .with_for_update(of=Lot)
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
            reason="release",
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
        if lot.status != "available" or (
            lot.expiration_date is not None and lot.expiration_date < today()
        ):
            state = lot.status if lot.status != "available" else "expired"
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
            reason="fulfilment",
            order_id=order_id,
        )
    session.flush()
