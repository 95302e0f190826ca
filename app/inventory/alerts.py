"""The stock conditions staff are alerted about (topic `stock`), found in two set-based queries.

- `low-stock:<product id>`: an active product with a par level whose sellable units (the
  core's rule, `repository.lot_is_sellable`: available lots not past their expiry, on hand
  minus reserved) are at or under par; with the days of cover at the last 30 days' sales
  velocity and the quantity to reorder (`service.suggested_order_quantity`). The same rule as
  GET /inventory/low-stock, so the alert and the report agree: units inside
  MIN_REMAINING_SHELF_LIFE_DAYS still count (orders no longer take them; they show up as
  expiring lots).
- `expiring:<lot id>`: a lot (available or quarantined) of an active product that still holds
  stock and expires within STOCK_EXPIRY_WARNING_DAYS (today included; an expired lot is no
  longer "expiring").
- `expired-only:<product id>`: an active product that has stock on hand, all of it expired
  (past its date, or a lot marked expired).

Summaries and details name products, SKUs, lots, counts and dates, never a patient.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.alerts.service import Condition, one_line
from app.config import get_settings
from app.inventory.repository import lot_is_sellable
from app.inventory.service import suggested_order_quantity
from app.models import Lot, Order, OrderItem, Product
from app.models.status import LotStatus, OrderStatus

# Sales velocity: units of paid or fulfilled orders per day over this many days (today
# included).
VELOCITY_DAYS = 30
# Lot states that still sit on the shelf as usable or soon-usable stock.
SHELF_STATUSES = (LotStatus.AVAILABLE, LotStatus.QUARANTINED)


def _start_of(day: date) -> datetime:
    """Midnight UTC of `day`."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def units_sold(*, today: date) -> Any:
    """Per product, the units of orders paid in the last VELOCITY_DAYS days (today included)
    that are paid or fulfilled now (a cancelled and refunded order sold nothing)."""
    since = today - timedelta(days=VELOCITY_DAYS - 1)
    return (
        select(OrderItem.product_id, func.sum(OrderItem.quantity).label("sold"))
        .join(Order, Order.id == OrderItem.order_id)
        .where(
            Order.status.in_((OrderStatus.PAID, OrderStatus.FULFILLED)),
            Order.paid_at >= _start_of(since),
            Order.paid_at < _start_of(today + timedelta(days=1)),
        )
        .group_by(OrderItem.product_id)
        .subquery("sold")
    )


def days_of_cover(sellable: int, sold: int) -> tuple[float, float | None]:
    """(units per day, days the sellable units last at that pace; None without sales)."""
    per_day = sold / VELOCITY_DAYS
    if per_day <= 0:
        return 0.0, None
    return round(per_day, 2), round(max(sellable, 0) / per_day, 1)


def _expired(today: date) -> Any:
    return or_(
        Lot.status == LotStatus.EXPIRED,
        and_(Lot.expiration_date.is_not(None), Lot.expiration_date < today),
    )


def _product_conditions(session: Session, today: date) -> list[Condition]:
    """Low stock and expired-only, from one aggregate of lots per active product."""
    free = Lot.quantity_on_hand - Lot.quantity_reserved
    holds_stock = Lot.quantity_on_hand > 0
    expired = and_(holds_stock, _expired(today))
    sellable = func.coalesce(func.sum(free).filter(lot_is_sellable(today)), 0)
    on_hand = func.coalesce(func.sum(Lot.quantity_on_hand).filter(holds_stock), 0)
    expired_units = func.coalesce(func.sum(Lot.quantity_on_hand).filter(expired), 0)
    per_product = (
        select(
            Product.id,
            Product.sku,
            Product.name,
            Product.par_level,
            Product.reorder_quantity,
            sellable.label("sellable"),
            on_hand.label("on_hand"),
            expired_units.label("expired_units"),
            func.count(Lot.id).filter(expired).label("expired_lots"),
            func.max(Lot.expiration_date).filter(expired).label("last_expiry"),
        )
        .select_from(Product)
        .outerjoin(Lot, Lot.product_id == Product.id)
        .where(Product.active.is_(True))
        .group_by(Product.id)
        .having(
            or_(
                and_(Product.par_level > 0, sellable <= Product.par_level),
                and_(on_hand > 0, expired_units == on_hand),
            )
        )
        .subquery("per_product")
    )
    sold = units_sold(today=today)
    rows = session.execute(
        select(per_product, func.coalesce(sold.c.sold, 0).label("sold"))
        .outerjoin(sold, sold.c.product_id == per_product.c.id)
        .order_by(per_product.c.sku)
    ).all()
    low: list[Condition] = []
    expired_only: list[Condition] = []
    for row in rows:
        product = f"{row.sku} {row.name}"
        if row.par_level > 0 and row.sellable <= row.par_level:
            per_day, cover = days_of_cover(row.sellable, int(row.sold))
            order = suggested_order_quantity(row.par_level, row.sellable, row.reorder_quantity)
            pace = (
                f"{cover:g} days of cover at {per_day:g}/day"
                if cover is not None
                else "no sales in 30 days"
            )
            low.append(
                Condition(
                    key=f"low-stock:{row.id}",
                    summary=one_line(
                        f"Low stock: {row.sellable} sellable, par {row.par_level}, {pace};"
                        f" reorder {order}: {product}"
                    ),
                    details={
                        "product_id": row.id,
                        "sku": row.sku,
                        "name": row.name,
                        "par_level": row.par_level,
                        "sellable": int(row.sellable),
                        "reorder_quantity": row.reorder_quantity,
                        "suggested_order_quantity": order,
                        "units_sold_30_days": int(row.sold),
                        "units_per_day": per_day,
                        "days_of_cover": cover,
                        "as_of": today,
                    },
                )
            )
        if row.on_hand > 0 and row.expired_units == row.on_hand:
            expired_only.append(
                Condition(
                    key=f"expired-only:{row.id}",
                    summary=one_line(
                        f"Only expired stock: {row.expired_units} units in"
                        f" {row.expired_lots} expired lot(s), none usable: {product}"
                    ),
                    details={
                        "product_id": row.id,
                        "sku": row.sku,
                        "name": row.name,
                        "expired_units": int(row.expired_units),
                        "expired_lots": int(row.expired_lots),
                        "latest_expiration_date": row.last_expiry,
                        "as_of": today,
                    },
                )
            )
    return low + expired_only


def _expiring_lots(session: Session, today: date, within_days: int) -> list[Condition]:
    rows = session.execute(
        select(
            Lot.id,
            Lot.lot_number,
            Lot.expiration_date,
            Lot.quantity_on_hand,
            Lot.quantity_reserved,
            Lot.status,
            Product.id.label("product_id"),
            Product.sku,
            Product.name,
        )
        .join(Product, Product.id == Lot.product_id)
        .where(
            Product.active.is_(True),
            Lot.quantity_on_hand > 0,
            Lot.status.in_(SHELF_STATUSES),
            Lot.expiration_date >= today,
            Lot.expiration_date <= today + timedelta(days=within_days),
        )
        .order_by(Lot.expiration_date, Product.sku, Lot.lot_number)
    ).all()
    conditions = []
    for row in rows:
        days = (row.expiration_date - today).days
        when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
        status = "" if row.status == LotStatus.AVAILABLE else f" ({row.status})"
        conditions.append(
            Condition(
                key=f"expiring:{row.id}",
                summary=one_line(
                    f"Expiring: lot {row.lot_number}{status}, {row.quantity_on_hand} units,"
                    f" expires {row.expiration_date.isoformat()} ({when}): {row.sku} {row.name}"
                ),
                details={
                    "lot_id": row.id,
                    "lot_number": row.lot_number,
                    "lot_status": row.status,
                    "product_id": row.product_id,
                    "sku": row.sku,
                    "name": row.name,
                    "expiration_date": row.expiration_date,
                    "days_left": days,
                    "quantity_on_hand": row.quantity_on_hand,
                    "quantity_reserved": row.quantity_reserved,
                    "as_of": today,
                },
            )
        )
    return conditions


def current_stock_conditions(
    session: Session, *, today: date, expiry_warning_days: int | None = None
) -> list[Condition]:
    """Every stock condition true on `today` (two queries, whatever the catalogue's size):
    low stock and expired-only products (by SKU), then lots expiring soonest first."""
    within = (
        expiry_warning_days
        if expiry_warning_days is not None
        else get_settings().stock_expiry_warning_days
    )
    return _product_conditions(session, today) + _expiring_lots(session, today, within)
