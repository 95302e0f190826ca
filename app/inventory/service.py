"""Lots and the stock ledger.

Every change to a lot's counters is one atomic conditional UPDATE plus one `stock_movements`
row in the same transaction, so the counters are always the running sum of the ledger and
concurrent writers can never drive them negative (the CHECK constraints are the backstop).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor
from app.audit import service as audit
from app.errors import (
    Conflict,
    DuplicateValue,
    InsufficientStock,
    InvalidStateTransition,
    NotFound,
)
from app.inventory import repository
from app.inventory.schemas import LotReceive, LotStatusChange, LowStockItem, StockAdjustment
from app.models import Lot, Product, StockMovement
from app.models.base import utcnow
from app.models.status import AdjustmentReason, LotStatus, StockMovementReason
from app.pagination import Keyset, KeysetPage

# Lot status machine: recalled and expired are final.
LOT_TRANSITIONS: dict[LotStatus, frozenset[LotStatus]] = {
    LotStatus.AVAILABLE: frozenset({LotStatus.QUARANTINED, LotStatus.RECALLED, LotStatus.EXPIRED}),
    LotStatus.QUARANTINED: frozenset({LotStatus.AVAILABLE, LotStatus.RECALLED, LotStatus.EXPIRED}),
    LotStatus.RECALLED: frozenset(),
    LotStatus.EXPIRED: frozenset(),
}


def lot_fields(lot: Lot) -> dict[str, Any]:
    return {
        "product_id": lot.product_id,
        "lot_number": lot.lot_number,
        "expiration_date": lot.expiration_date,
        "quantity_on_hand": lot.quantity_on_hand,
        "quantity_reserved": lot.quantity_reserved,
        "status": lot.status,
    }


def get_product(session: Session, product_id: uuid.UUID) -> Product:
    """The product whose lots are asked for (read here, not through the catalog, which itself
    reads stock from this package)."""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    return product


def get_lot(session: Session, lot_id: uuid.UUID) -> Lot:
    lot = session.get(Lot, lot_id)
    if lot is None:
        raise NotFound("lot", lot_id)
    return lot


def record_movement(
    session: Session,
    actor: Actor,
    lot_id: uuid.UUID,
    *,
    delta_on_hand: int = 0,
    delta_reserved: int = 0,
    reason: StockMovementReason,
    reason_code: AdjustmentReason | None = None,
    note: str | None = None,
    order_id: uuid.UUID | None = None,
) -> StockMovement:
    movement = StockMovement(
        lot_id=lot_id,
        delta_on_hand=delta_on_hand,
        delta_reserved=delta_reserved,
        reason=reason,
        reason_code=reason_code,
        note=note,
        order_id=order_id,
        actor_subject=actor.subject,
    )
    session.add(movement)
    return movement


def receive_lot(session: Session, actor: Actor, product_id: uuid.UUID, data: LotReceive) -> Lot:
    product = get_product(session, product_id)
    if not product.active:
        raise Conflict(f"product {product.sku} is archived; restore it before receiving stock")
    if product.perishable and data.expiration_date is None:
        # The product's state decides (409); an expiration date not after today is already
        # refused by the request's validation (422).
        raise Conflict(
            f"product {product.sku} is perishable: its lots need an expiration_date",
            field="expiration_date",
        )
    duplicate = session.scalar(
        select(Lot.id).where(Lot.product_id == product.id, Lot.lot_number == data.lot_number)
    )
    if duplicate is not None:
        raise DuplicateValue(
            f"lot {data.lot_number} of {product.sku} was already received", field="lot_number"
        )
    lot = Lot(
        product_id=product.id,
        lot_number=data.lot_number,
        expiration_date=data.expiration_date,
        quantity_on_hand=data.quantity,
        quantity_reserved=0,
        status=LotStatus.AVAILABLE,
    )
    session.add(lot)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DuplicateValue(
            f"lot {data.lot_number} of {product.sku} was already received", field="lot_number"
        ) from exc
    record_movement(
        session, actor, lot.id, delta_on_hand=data.quantity, reason=StockMovementReason.RECEIPT
    )
    session.refresh(lot)
    audit.record(session, actor, "lot.received", "lot", lot.id, after=lot_fields(lot))
    return lot


def change_status(session: Session, actor: Actor, lot_id: uuid.UUID, data: LotStatusChange) -> Lot:
    lot = locks.lot(session, lot_id)
    if lot is None:
        raise NotFound("lot", lot_id)
    allowed = LOT_TRANSITIONS[LotStatus(lot.status)]
    if data.status not in allowed:
        raise InvalidStateTransition(
            f"a lot that is {lot.status} cannot become {data.status}",
            current_status=lot.status,
            allowed=sorted(allowed),
        )
    if (
        data.status == LotStatus.AVAILABLE
        and lot.expiration_date is not None
        and lot.expiration_date < repository.today()
    ):
        raise InvalidStateTransition(
            f"lot {lot.lot_number} expired on {lot.expiration_date}; it cannot be released",
            current_status=lot.status,
        )
    before = lot_fields(lot)
    lot.status = data.status
    lot.status_reason = data.reason
    lot.status_changed_at = utcnow()
    audit.record(
        session,
        actor,
        "lot.status_changed",
        "lot",
        lot.id,
        before=before,
        after={**lot_fields(lot), "reason": data.reason},
    )
    return lot


def adjust_stock(
    session: Session, actor: Actor, lot_id: uuid.UUID, data: StockAdjustment
) -> tuple[Lot, StockMovement]:
    """Apply a counted correction atomically; on-hand may never drop below what is reserved."""
    applied = session.execute(
        update(Lot)
        .where(Lot.id == lot_id, Lot.quantity_on_hand + data.delta >= Lot.quantity_reserved)
        .values(quantity_on_hand=Lot.quantity_on_hand + data.delta)
        .returning(Lot.quantity_on_hand, Lot.quantity_reserved)
    ).first()
    if applied is None:
        lot = get_lot(session, lot_id)
        free = lot.quantity_on_hand - lot.quantity_reserved
        raise InsufficientStock(
            f"lot {lot.lot_number} has {lot.quantity_on_hand} on hand of which"
            f" {lot.quantity_reserved} are reserved; it cannot lose {-data.delta}",
            quantity_on_hand=lot.quantity_on_hand,
            quantity_reserved=lot.quantity_reserved,
            quantity_free=free,
        )
    movement = record_movement(
        session,
        actor,
        lot_id,
        delta_on_hand=data.delta,
        reason=StockMovementReason.ADJUSTMENT,
        reason_code=data.reason,
        note=data.note,
    )
    refreshed = session.get(Lot, lot_id, populate_existing=True)
    assert refreshed is not None
    audit.record(
        session,
        actor,
        "lot.adjusted",
        "lot",
        lot_id,
        before={"quantity_on_hand": applied.quantity_on_hand - data.delta},
        after={
            "quantity_on_hand": applied.quantity_on_hand,
            "delta": data.delta,
            "reason": data.reason,
        },
    )
    return refreshed, movement


LOTS_OLDEST_FIRST = Keyset(Lot.created_at, Lot.id)
# The ledger in the order it was written.
MOVEMENTS_IN_ORDER = Keyset(StockMovement.seq)


def list_lots(
    session: Session, product_id: uuid.UUID, *, limit: int, cursor: str | None
) -> KeysetPage[Lot]:
    get_product(session, product_id)
    query = select(Lot).where(Lot.product_id == product_id)
    return LOTS_OLDEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)


def list_movements(
    session: Session, lot_id: uuid.UUID, *, limit: int, cursor: str | None
) -> KeysetPage[StockMovement]:
    get_lot(session, lot_id)
    query = select(StockMovement).where(StockMovement.lot_id == lot_id)
    return MOVEMENTS_IN_ORDER.scalars(session, query, limit=limit, cursor=cursor)


def low_stock(
    session: Session, *, expiring_within_days: int, limit: int, cursor: str | None
) -> KeysetPage[LowStockItem]:
    """Active products at or below par (by SKU), each with the quantity to order."""
    rows = repository.low_stock(
        session, expiring_within_days=expiring_within_days, limit=limit, cursor=cursor
    )
    return rows.map(
        lambda row: LowStockItem(
            **row,
            suggested_order_quantity=suggested_order_quantity(
                row["par_level"], row["quantity_sellable"], row["reorder_quantity"]
            ),
        )
    )


def suggested_order_quantity(par_level: int, sellable: int, reorder_quantity: int) -> int:
    """Units to order to get back above par, in multiples of the reorder quantity."""
    shortfall = par_level - sellable + 1
    if shortfall <= 0:
        return 0
    if reorder_quantity <= 0:
        return shortfall
    return math.ceil(shortfall / reorder_quantity) * reorder_quantity
