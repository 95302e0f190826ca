"""Stock queries: inventory's own, and those the catalog reads (inventory never imports catalog)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from app.models import Lot, Product, StockMovement
from app.models.base import utcnow
from app.models.status import LotStatus
from app.pagination import Keyset, KeysetPage


def today() -> date:
    return utcnow().date()


def lot_is_sellable(on: date | None = None) -> ColumnElement[bool]:
    """Available status and not past its expiration date (expiring today is still sellable)."""
    on = on or today()
    return and_(
        Lot.status == LotStatus.AVAILABLE,
        or_(Lot.expiration_date.is_(None), Lot.expiration_date >= on),
    )


def sellable_quantity_of(product_id: Any) -> Any:
    """A scalar subquery: units of the product that can still be promised to an order."""
    return (
        select(func.coalesce(func.sum(Lot.quantity_on_hand - Lot.quantity_reserved), 0))
        .where(Lot.product_id == product_id, lot_is_sellable())
        .correlate_except(Lot)
        .scalar_subquery()
    )


def has_lots(session: Session, product_id: uuid.UUID) -> bool:
    """Whether any lot of the product was ever received (its stock has a history)."""
    return bool(session.scalar(select(exists().where(Lot.product_id == product_id))))


def undated_lot_count(session: Session, product_id: uuid.UUID) -> int:
    """Lots of the product without an expiration date."""
    count = session.scalar(
        select(func.count())
        .select_from(Lot)
        .where(Lot.product_id == product_id, Lot.expiration_date.is_(None))
    )
    return int(count or 0)


LOW_STOCK_BY_SKU = Keyset(Product.sku)


def low_stock(
    session: Session, *, expiring_within_days: int, limit: int, cursor: str | None
) -> KeysetPage[dict[str, Any]]:
    """Active products whose sellable quantity is at or below their par level."""
    on = today()
    sellable = lot_is_sellable(on)
    free = Lot.quantity_on_hand - Lot.quantity_reserved
    sellable_qty = func.coalesce(func.sum(free).filter(sellable), 0)
    expiring = and_(sellable, Lot.expiration_date <= on + timedelta(days=expiring_within_days))
    query = (
        select(
            Product.id.label("product_id"),
            Product.sku,
            Product.name,
            Product.par_level,
            Product.reorder_quantity,
            sellable_qty.label("quantity_sellable"),
            func.coalesce(func.sum(Lot.quantity_on_hand).filter(sellable), 0).label(
                "quantity_on_hand"
            ),
            func.coalesce(func.sum(Lot.quantity_reserved).filter(sellable), 0).label(
                "quantity_reserved"
            ),
            func.coalesce(func.sum(free).filter(expiring), 0).label("quantity_expiring_soon"),
            func.min(Lot.expiration_date).filter(sellable).label("next_expiration_date"),
        )
        .select_from(Product)
        .outerjoin(Lot, Lot.product_id == Product.id)
        .where(Product.active.is_(True))
        .group_by(Product.id)
        .having(sellable_qty <= Product.par_level)
    )
    names = list(query.selected_columns.keys())
    page = LOW_STOCK_BY_SKU.rows(session, query, limit=limit, cursor=cursor)
    return page.map(lambda row: dict(zip(names, row, strict=True)))


def ledger_totals(session: Session, lot_id: uuid.UUID) -> tuple[int, int]:
    """The lot's counters as its ledger says they should be."""
    on_hand, reserved = session.execute(
        select(
            func.coalesce(func.sum(StockMovement.delta_on_hand), 0),
            func.coalesce(func.sum(StockMovement.delta_reserved), 0),
        ).where(StockMovement.lot_id == lot_id)
    ).one()
    return int(on_hand), int(reserved)


def lots_disagreeing_with_ledger(session: Session) -> list[uuid.UUID]:
    """Every lot whose counters differ from the sum of its movements (should be none)."""
    sums = (
        select(
            StockMovement.lot_id,
            func.sum(StockMovement.delta_on_hand).label("on_hand"),
            func.sum(StockMovement.delta_reserved).label("reserved"),
        )
        .group_by(StockMovement.lot_id)
        .subquery()
    )
    query = (
        select(Lot.id)
        .outerjoin(sums, sums.c.lot_id == Lot.id)
        .where(
            or_(
                func.coalesce(sums.c.on_hand, 0) != Lot.quantity_on_hand,
                func.coalesce(sums.c.reserved, 0) != Lot.quantity_reserved,
            )
        )
    )
    return list(session.scalars(query))
