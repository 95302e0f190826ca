"""Orders: a doctor (or admin) orders for a patient; stock is reserved in the same transaction.

The rules and state changes of an order; what they cause elsewhere (links, e-mails, refunds) is
in `app.orders.flows`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Exists, Integer, Select, delete, exists, func, select
from sqlalchemy.orm import QueryableAttribute, Session

from app import locks, phi
from app.actor import Actor, Role
from app.audit import service as audit
from app.config import get_settings
from app.errors import Conflict, NotFound
from app.inventory import allocation
from app.models import Lot, LotAllocation, Order, OrderItem, Patient, Payment, Product
from app.models.base import utcnow
from app.models.order_item import dosage_text_context
from app.models.status import CancellationReason, OrderStatus, PaymentStatus
from app.orders import state
from app.orders.schemas import (
    AllocationOut,
    OrderCreate,
    OrderItemOut,
    OrderLine,
    OrderOut,
)
from app.pagination import Keyset, KeysetPage
from app.patients.service import get_visible_patient
from app.pharmacy import service as pharmacy
from app.pharmacy.schemas import OrderPharmacyOut
from app.schemas import MAX_ORDER_TOTAL_CENTS


def note_context(order_id: uuid.UUID) -> str:
    return f"orders.note.{order_id}"


def cancellation_note_context(order_id: uuid.UUID) -> str:
    # Migration 0010 seals notes moved from the old free-text reasons with this same context.
    return f"orders.cancellation_note.{order_id}"


def visible_orders(actor: Actor) -> Select[Order]:
    """Orders the actor may see: a doctor those of their own patients."""
    query = select(Order)
    if actor.role == Role.DOCTOR:
        query = query.join(Patient, Patient.id == Order.patient_id).where(
            Patient.doctor_id == actor.user_id
        )
    return query


def get_visible_order(
    session: Session, actor: Actor, order_id: uuid.UUID, *, for_update: bool = False
) -> Order:
    query = visible_orders(actor).where(Order.id == order_id)
    order = locks.order_of(session, query) if for_update else session.scalar(query)
    if order is None:
        raise NotFound("order", order_id)
    return order


def _merge(lines: list[OrderLine]) -> dict[uuid.UUID, int]:
    quantities: dict[uuid.UUID, int] = defaultdict(int)
    for line in lines:
        quantities[line.product_id] += line.quantity
    return dict(quantities)


def _dosage_texts(
    lines: list[OrderLine], products: dict[uuid.UUID, Product]
) -> dict[uuid.UUID, str]:
    """The sig of each prescription product the lines give one for (one per product)."""
    texts: dict[uuid.UUID, str] = {}
    for line in lines:
        if line.dosage_text is None:
            continue
        product = products[line.product_id]
        if not product.requires_prescription:
            raise Conflict(
                f"product {product.sku} needs no prescription; it takes no dosage_text",
                field="items",
            )
        if texts.setdefault(line.product_id, line.dosage_text) != line.dosage_text:
            raise Conflict(
                f"product {product.sku} is given two different dosage texts", field="items"
            )
    return texts


def _orderable_products(session: Session, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Product]:
    products = {
        p.id: p for p in session.scalars(select(Product).where(Product.id.in_(product_ids)))
    }
    for product_id in product_ids:
        product = products.get(product_id)
        if product is None:
            raise NotFound("product", product_id)
        if not product.active:
            raise Conflict(f"product {product.sku} is archived", field="items")
    return products


def _items(
    order: Order,
    quantities: dict[uuid.UUID, int],
    products: dict[uuid.UUID, Product],
    keep_prices: dict[uuid.UUID, int] | None = None,
    dosage_texts: dict[uuid.UUID, str] | None = None,
) -> list[OrderItem]:
    keep_prices = keep_prices or {}
    dosage_texts = dosage_texts or {}
    items = []
    for product_id, quantity in sorted(quantities.items()):
        item = OrderItem(
            id=uuid.uuid4(),
            order_id=order.id,
            product_id=product_id,
            quantity=quantity,
            unit_price_cents=keep_prices.get(product_id, products[product_id].price_cents),
        )
        if product_id in dosage_texts:
            item.dosage_text_encrypted = phi.encrypt(
                dosage_texts[product_id], dosage_text_context(item.id)
            )
        items.append(item)
    return items


def _add_items_and_reserve(
    session: Session,
    actor: Actor,
    order: Order,
    items: list[OrderItem],
    products: dict[uuid.UUID, Product],
) -> list[allocation.Reservation]:
    """Price the order from its items and reserve their stock (all or nothing)."""
    total = sum(i.quantity * i.unit_price_cents for i in items)
    if total > MAX_ORDER_TOTAL_CENTS:
        # The total follows from today's prices, not from the request's shape: a 409.
        raise Conflict(
            f"the order's total of {total} cents exceeds the largest order accepted "
            f"({MAX_ORDER_TOTAL_CENTS} cents)",
            field="items",
        )
    order.total_cents = total
    session.add_all(items)
    session.flush()  # the order (if new) and its items, in one statement per table
    return allocation.reserve(
        session,
        actor,
        order.id,
        items,
        products,
        min_shelf_life_days=get_settings().min_remaining_shelf_life_days,
    )


def _summary(order: Order, items: list[OrderItem]) -> dict[str, Any]:
    return {
        "status": order.status,
        "patient_id": order.patient_id,
        "total_cents": order.total_cents,
        "items": [
            {
                "product_id": i.product_id,
                "quantity": i.quantity,
                "unit_price_cents": i.unit_price_cents,
            }
            for i in items
        ],
    }


@dataclass(frozen=True)
class OrderParts:
    """What an order's view is built from: its items (each with SKU and name), the lots they
    were reserved from and its notes in clear."""

    order: Order
    lines: list[tuple[OrderItem, str, str]]
    reservations: list[allocation.Reservation]
    note: str | None
    cancellation_note: str | None = None
    dosage_texts: dict[uuid.UUID, str] = field(default_factory=dict)  # by order item id
    pharmacy: list[OrderPharmacyOut] = field(default_factory=list)


@dataclass(frozen=True)
class CreatedOrder:
    """A new order with the parts of its view, so that no read-back is needed. Holding the
    patient keeps it in the session's identity map for the link's e-mail."""

    parts: OrderParts
    patient: Patient

    @property
    def order(self) -> Order:
        return self.parts.order


def create_order(
    session: Session, actor: Actor, data: OrderCreate, *, payment_window: timedelta | None = None
) -> CreatedOrder:
    """A pending order with its stock reserved; unpaid, it expires after `payment_window`
    (default ORDER_PAYMENT_TTL_HOURS)."""
    settings = get_settings()
    patient = get_visible_patient(session, actor, data.patient_id)
    quantities = _merge(data.items)
    products = _orderable_products(session, list(quantities))
    now = utcnow()
    order = Order(
        id=uuid.uuid4(),
        patient_id=patient.id,
        doctor_id=actor.user_id if actor.role == Role.DOCTOR else patient.doctor_id,
        status=OrderStatus.PENDING,
        currency="usd",
        expires_at=now + (payment_window or timedelta(hours=settings.order_payment_ttl_hours)),
    )
    if data.note:
        order.note_encrypted = phi.encrypt(data.note, note_context(order.id))
    session.add(order)
    dosage_texts = _dosage_texts(data.items, products)
    items = _items(order, quantities, products, dosage_texts=dosage_texts)
    reservations = _add_items_and_reserve(session, actor, order, items, products)
    audit.record(
        session,
        actor,
        "order.created",
        "order",
        order.id,
        after={**_summary(order, items), "note": data.note},
        redact={"note"},
    )
    lines = [(i, products[i.product_id].sku, products[i.product_id].name) for i in items]
    parts = OrderParts(
        order, lines, reservations, data.note, dosage_texts=_by_item(items, dosage_texts)
    )
    return CreatedOrder(parts, patient)


def _by_item(items: list[OrderItem], texts: dict[uuid.UUID, str]) -> dict[uuid.UUID, str]:
    return {item.id: texts[item.product_id] for item in items if item.product_id in texts}


def _item_ids(session: Session, order_id: uuid.UUID) -> list[uuid.UUID]:
    return list(session.scalars(select(OrderItem.id).where(OrderItem.order_id == order_id)))


def _debit_processing(order_id: uuid.UUID | QueryableAttribute[uuid.UUID]) -> Exists:
    """Whether a bank debit (ACH) of the order is still processing: Stripe has not decided."""
    return exists().where(Payment.order_id == order_id, Payment.status == PaymentStatus.PROCESSING)


def edit_items(
    session: Session, actor: Actor, order_id: uuid.UUID, lines: list[OrderLine]
) -> Order:
    """Replace a pending order's items, re-reserving atomically (all or nothing)."""
    order = get_visible_order(session, actor, order_id, for_update=True)
    state.ensure_payable(order)  # only a pending order can still change
    if session.scalar(select(_debit_processing(order.id))):
        raise Conflict("a bank payment for this order is processing; it cannot be edited now")
    old_items = list(session.scalars(select(OrderItem).where(OrderItem.order_id == order.id)))
    before = _summary(order, old_items)
    quantities = _merge(lines)
    products = _orderable_products(session, list(quantities))
    locks.lots_where(session, Lot.product_id.in_({*quantities, *(i.product_id for i in old_items)}))
    allocation.release(session, actor, order.id, [i.id for i in old_items], delete_allocations=True)
    kept_prices = {i.product_id: i.unit_price_cents for i in old_items}
    # A line without a sig keeps the one its product had (callers that never send one).
    dosage_texts = {
        i.product_id: phi.decrypt(i.dosage_text_encrypted, dosage_text_context(i.id))
        for i in old_items
        if i.dosage_text_encrypted and i.product_id in quantities
    }
    dosage_texts.update(_dosage_texts(lines, products))
    session.execute(delete(OrderItem).where(OrderItem.order_id == order.id))
    items = _items(order, quantities, products, keep_prices=kept_prices, dosage_texts=dosage_texts)
    order.updated_at = utcnow()
    _add_items_and_reserve(session, actor, order, items, products)
    audit.record(
        session,
        actor,
        "order.edited",
        "order",
        order.id,
        before=before,
        after=_summary(order, items),
    )
    return order


def cancel(
    session: Session,
    actor: Actor,
    order: Order,
    reason: CancellationReason,
    note: str | None = None,
) -> str:
    """Cancel a pending or paid order (locked by the caller) and release its stock; returns the
    status it had. Refunding a paid one and telling the patient is `flows.cancel_order`'s.

    `reason` is kept in clear and audited; `note` (free text, may hold health details) is
    stored encrypted and never audited.
    """
    before = order.status
    state.move_to(order, OrderStatus.CANCELLED, utcnow())
    order.cancellation_code = reason.value
    order.cancellation_note_encrypted = (
        phi.encrypt(note, cancellation_note_context(order.id)) if note else None
    )
    allocation.release(session, actor, order.id, _item_ids(session, order.id))
    audit.record(
        session,
        actor,
        "order.cancelled",
        "order",
        order.id,
        before={"status": before},
        after={"status": OrderStatus.CANCELLED, "reason": reason.value, "note": note},
        redact={"note"},
    )
    return before


def _move_and_audit(
    session: Session, actor: Actor, order: Order, target: OrderStatus, action: str
) -> Order:
    """The order takes its next status, and the audit log says from which to which."""
    before = order.status
    state.move_to(order, target, utcnow())
    audit.record(
        session,
        actor,
        action,
        "order",
        order.id,
        before={"status": before},
        after={"status": target},
    )
    return order


def mark_paid(session: Session, actor: Actor, order_id: uuid.UUID) -> Order:
    """Record that the order was paid (called by the payments flow)."""
    order = get_visible_order(session, actor, order_id, for_update=True)
    return _move_and_audit(session, actor, order, OrderStatus.PAID, "order.paid")


class PaymentRefunded(Conflict):
    slug = "payment-refunded"
    title = "The order's payment was refunded"


class PaymentDisputed(Conflict):
    slug = "payment-disputed"
    title = "The order's payment is disputed"


def _ensure_payment_kept(session: Session, order: Order) -> None:
    """Refuse to ship an order whose money is disputed or was given back in full.

    Read without a lock: the webhook locks a payment before its order, so this order's lock
    (held) orders us with any refund or dispute being applied.
    """
    succeeded = list(
        session.scalars(
            select(Payment).where(
                Payment.order_id == order.id, Payment.status == PaymentStatus.SUCCEEDED
            )
        )
    )
    if any(p.disputed for p in succeeded):
        raise PaymentDisputed(
            "the order's payment is disputed at Stripe; it cannot be shipped",
            current_status=order.status,
        )
    if succeeded and all(p.refunded_cents >= p.amount_cents for p in succeeded):
        raise PaymentRefunded(
            "the order's payment was refunded in full; cancel the order instead of shipping it",
            current_status=order.status,
        )


def fulfil_order(session: Session, actor: Actor, order_id: uuid.UUID) -> Order:
    order = get_visible_order(session, actor, order_id, for_update=True)
    state.ensure_can_become(order, OrderStatus.FULFILLED)
    _ensure_payment_kept(session, order)
    allocation.consume(session, actor, order.id, _item_ids(session, order.id))
    return _move_and_audit(session, actor, order, OrderStatus.FULFILLED, "order.fulfilled")


def claim_expired_orders(session: Session, *, now: datetime, batch: int) -> list[Order]:
    """Pending orders whose payment window has closed, locked with the lots they hold.

    Rows locked by a concurrent payment are skipped (SKIP LOCKED) and picked up next run; an
    order whose bank debit (ACH) is processing is left alone until Stripe decides.
    """
    processing = _debit_processing(Order.id)
    orders = locks.claim_expired_orders(
        session,
        (Order.status == OrderStatus.PENDING) & (Order.expires_at <= now) & ~processing,
        limit=batch,
    )
    if orders:
        locks.lots_where(
            session,
            Lot.id.in_(
                select(LotAllocation.lot_id)
                .join(OrderItem, OrderItem.id == LotAllocation.order_item_id)
                .where(OrderItem.order_id.in_([o.id for o in orders]))
            ),
        )
    return orders


def rotate_order_notes(
    session: Session, *, batch: int = 500, progress: Callable[[int], None] | None = None
) -> int:
    """Re-encrypt orders' notes (the order's and the cancellation's) not sealed by the active
    key; returns the orders changed. Resumable, like `patients.service.rotate_keys`; the caller
    commits."""
    columns: list[tuple[str, Callable[[uuid.UUID], str]]] = [
        ("note_encrypted", note_context),
        ("cancellation_note_encrypted", cancellation_note_context),
    ]
    with_notes = select(Order).where(
        Order.note_encrypted.is_not(None) | Order.cancellation_note_encrypted.is_not(None)
    )
    changed = 0
    orders: list[Order]
    for orders in locks.in_id_batches(session, with_notes, Order.id, batch=batch):
        for order in orders:
            touched = False
            for column, context_of in columns:
                value: str | None = getattr(order, column)
                resealed = phi.reseal(value, context_of(order.id)) if value else None
                if resealed is not None:
                    setattr(order, column, resealed)
                    touched = True
            changed += touched
        session.flush()
        if progress:
            progress(len(orders))
    return changed


NEWEST_FIRST = Keyset(Order.created_at, Order.id, descending=True)


def reference_range(reference: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The ids an order reference (the id's first 8 hex digits) can stand for, as a range the
    primary key's index serves."""
    prefix = reference.lower()
    return uuid.UUID(prefix + "0" * 24), uuid.UUID(prefix + "f" * 24)


def list_orders(
    session: Session,
    actor: Actor,
    *,
    status: str | None,
    patient_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
    doctor_id: uuid.UUID | None = None,
    reference: str | None = None,
) -> KeysetPage[Order]:
    query = visible_orders(actor)
    if status:
        query = query.where(Order.status == status)
    if patient_id:
        query = query.where(Order.patient_id == patient_id)
    if doctor_id:
        query = query.where(Order.doctor_id == doctor_id)
    if reference:
        low, high = reference_range(reference)
        query = query.where(Order.id.between(low, high))
    page = NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
    orders = page.rows
    # A list shows whose orders exist and what they cost: one audit row per read, naming them.
    audit.record(
        session,
        actor,
        "order.listed",
        "order",
        "list",
        after={
            "order_ids": [o.id for o in orders],
            "status": status,
            "patient_id": patient_id,
            "doctor_id": doctor_id,
            "reference": reference,
        },
    )
    return page


@dataclass(frozen=True)
class PaymentState:
    status: str | None = None
    refunded_cents: int = 0
    disputed: bool = False


def payment_states(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, PaymentState]:
    """For a page of orders: each one's latest payment status, what its payments refunded and
    whether one is disputed (one query)."""
    if not order_ids:
        return {}
    latest = (
        select(Payment.status)
        .where(Payment.order_id == Order.id)
        .order_by(Payment.created_at.desc(), Payment.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("status")
    )
    refunded = (
        select(func.coalesce(func.sum(Payment.refunded_cents), 0, type_=Integer))
        .where(Payment.order_id == Order.id)
        .scalar_subquery()
        .label("refunded")
    )
    disputed = exists().where(Payment.order_id == Order.id, Payment.disputed).label("disputed")
    query = select(Order.id, latest, refunded, disputed).where(Order.id.in_(order_ids))
    return {
        row["id"]: PaymentState(row["status"], row["refunded"], row["disputed"])
        for row in session.execute(query).mappings()
    }


def load_order(
    session: Session, actor: Actor, order: Order, *, audit_read: bool = False
) -> OrderParts:
    """Read the parts of an order's view; `audit_read` records the read (a PHI read)."""
    rows = session.execute(
        select(OrderItem, Product.sku, Product.name)
        .join(Product, Product.id == OrderItem.product_id)
        .where(OrderItem.order_id == order.id)
        .order_by(Product.sku)
    ).all()
    reservations = [
        allocation.Reservation(
            alloc.order_item_id, lot.id, lot.lot_number, lot.expiration_date, alloc.quantity
        )
        for alloc, lot in session.execute(
            select(LotAllocation, Lot)
            .join(Lot, Lot.id == LotAllocation.lot_id)
            .where(LotAllocation.order_item_id.in_([row[0].id for row in rows]))
            .order_by(Lot.expiration_date, Lot.id)
        ).all()
    ]
    note = (
        phi.decrypt(order.note_encrypted, note_context(order.id)) if order.note_encrypted else None
    )
    cancellation_note = (
        phi.decrypt(order.cancellation_note_encrypted, cancellation_note_context(order.id))
        if order.cancellation_note_encrypted
        else None
    )
    if audit_read:
        # The items are the patient's medications: every read is a PHI read, note or not.
        audit.record(session, actor, "order.read", "order", order.id)
    lines = [(item, sku, name) for item, sku, name in rows]
    dosage_texts = {
        item.id: phi.decrypt(item.dosage_text_encrypted, dosage_text_context(item.id))
        for item, _, _ in rows
        if item.dosage_text_encrypted
    }
    return OrderParts(
        order,
        lines,
        reservations,
        note,
        cancellation_note,
        dosage_texts=dosage_texts,
        pharmacy=pharmacy.order_pharmacy_view(session, order.id),
    )


def order_view(parts: OrderParts) -> OrderOut:
    """The order as the API shows it (the one builder of its view): items by SKU, each with
    the lots it was reserved from (soonest expiry first)."""
    order = parts.order
    allocations: dict[uuid.UUID, list[AllocationOut]] = defaultdict(list)
    for r in parts.reservations:
        allocations[r.order_item_id].append(
            AllocationOut(
                lot_id=r.lot_id,
                lot_number=r.lot_number,
                expiration_date=r.expiration_date,
                quantity=r.quantity,
            )
        )
    return OrderOut(
        id=order.id,
        patient_id=order.patient_id,
        doctor_id=order.doctor_id,
        status=order.status,
        total_cents=order.total_cents,
        currency=order.currency,
        note=parts.note,
        items=[
            OrderItemOut(
                product_id=item.product_id,
                sku=sku,
                name=name,
                quantity=item.quantity,
                unit_price_cents=item.unit_price_cents,
                line_total_cents=item.quantity * item.unit_price_cents,
                dosage_text=parts.dosage_texts.get(item.id),
                allocations=allocations[item.id],
            )
            for item, sku, name in sorted(parts.lines, key=lambda line: line[1])
        ],
        created_at=order.created_at,
        expires_at=order.expires_at,
        paid_at=order.paid_at,
        fulfilled_at=order.fulfilled_at,
        cancelled_at=order.cancelled_at,
        cancellation_reason=(
            CancellationReason(order.cancellation_code) if order.cancellation_code else None
        ),
        cancellation_note=parts.cancellation_note,
        pharmacy=parts.pharmacy,
    )
