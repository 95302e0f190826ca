"""Stateful property test of orders and stock, through the services on the real database.

Hypothesis drives random sequences of order and inventory operations (create, edit, cancel, pay,
fulfil, expire, adjust stock, recall / quarantine / release a lot, reprice a product) against
products with several lots of different expiries, some within the minimum shelf life. Each
operation runs the way a request would: its own session, inside a SAVEPOINT, so one refused
with a domain error (`PortalError`) leaves nothing behind.

After every step the database must be consistent: lot counters within bounds and equal to their
ledger, each lot's reservations exactly the allocations of the live (pending/paid) orders, order
totals equal to their lines, live orders fully allocated, finished orders holding nothing. A
small model of the expected outcome also checks that each operation was accepted or refused for
the right reason (no false "insufficient stock"), that orders take their lots
first-expiry-first-out and that prices captured at ordering survive an edit.

Each example runs in an outer transaction on the session-wide engine, rolled back afterwards.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from app.actor import Actor, Role
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate, ProductUpdate
from app.config import get_settings
from app.errors import InsufficientStock, InvalidStateTransition, PortalError
from app.inventory import service as inventory
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.inventory.schemas import LotReceive, LotStatusChange, StockAdjustment
from app.models import Lot, LotAllocation, Order, OrderItem, StockMovement, User
from app.models.base import utcnow
from app.models.status import CancellationReason
from app.orders import flows as order_flows
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.patients.schemas import PatientCreate
from app.patients.service import create_patient

T = TypeVar("T")

# (perishable, price, lots as (expires in days or None, units)). Lots are listed out of expiry
# order; +3 days is inside the 7-day minimum shelf life, so never reservable; product 2 is not
# perishable and has an undated lot (sold last). No two lots of a product expire the same day:
# FEFO breaks such ties by random lot id, and a failing example would not replay the same way.
PRODUCTS: list[tuple[bool, int, list[tuple[int | None, int]]]] = [
    (True, 1250, [(60, 5), (20, 4), (3, 6), (120, 3)]),
    (True, 799, [(45, 3), (10, 4), (46, 2)]),
    (False, 300, [(None, 6), (200, 2)]),
]
LOT_COUNT = sum(len(lots) for _, _, lots in PRODUCTS)
LIVE = ("pending", "paid")
LIFECYCLE = ("pending", "paid", "fulfilled", "cancelled")

product_index = st.integers(0, len(PRODUCTS) - 1)
order_lines = st.lists(st.tuples(product_index, st.integers(1, 8)), min_size=1, max_size=4)
lot_index = st.integers(0, LOT_COUNT - 1)
# Redirect a rule to a fitting order or lot (see `_pick`) about half of the time.
picks = st.none() | st.integers(0, 50)


@dataclass
class LotView:
    id: uuid.UUID
    product_id: uuid.UUID
    expiration_date: date | None
    on_hand: int
    reserved: int
    status: str


def fefo_date(expiration_date: date | None) -> date:
    return expiration_date or date.max


def attempt(
    connection: Connection, operation: Callable[[Session], T], name: str
) -> T | PortalError:
    """Run one operation like a request: own session, SAVEPOINT, committed or rolled back."""
    outcome = _attempt(connection, operation)
    event(f"{name}: {type(outcome).__name__ if isinstance(outcome, PortalError) else 'done'}")
    return outcome


def _attempt(connection: Connection, operation: Callable[[Session], T]) -> T | PortalError:
    with Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        try:
            with session.begin_nested():
                result = operation(session)
        except PortalError as refused:
            session.rollback()
            return refused
        session.commit()
        return result


class OrdersAndStock(RuleBasedStateMachine):
    """One example: the seeded products and lots, a doctor and a patient, in a transaction of its
    own on `engine`, rolled back in `teardown`."""

    orders = Bundle("orders")

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.connection = engine.connect()
        self.transaction = self.connection.begin()
        self.system = Actor.system("property-test")
        self.shelf_life = get_settings().min_remaining_shelf_life_days
        # The model: what the database should say.
        self.status: dict[uuid.UUID, str] = {}  # order -> status, in creation order
        self.expires_at: dict[uuid.UUID, datetime] = {}
        self.on_hand: dict[uuid.UUID, int] = {}  # lot -> units on hand
        self.lot_status: dict[uuid.UUID, str] = {}
        self.price: dict[uuid.UUID, int] = {}  # product -> current catalog price
        self.product_ids: list[uuid.UUID] = []
        self.lot_ids: list[uuid.UUID] = []
        self._seed()

    def teardown(self) -> None:
        self.transaction.rollback()
        self.connection.close()

    def _seed(self) -> None:
        def seed(session: Session) -> None:
            subject = f"prop-doctor-{uuid.uuid4().hex[:8]}"
            doctor = User(role="doctor", oidc_subject=subject, email=f"{subject}@clinic.test")
            session.add(doctor)
            session.flush()
            self.doctor = Actor(subject=subject, role=Role.DOCTOR, user_id=doctor.id)
            patient = create_patient(
                session,
                self.doctor,
                PatientCreate(
                    name="Prop Erty",
                    email="prop.erty@example.com",
                    phone="+1 555 0199",
                    date_of_birth=date(1980, 5, 17),
                ),
            )
            self.patient_id = patient.id
            for n, (perishable, price, lots) in enumerate(PRODUCTS):
                product = catalog.create_product(
                    session,
                    self.system,
                    ProductCreate(
                        sku=f"PROP-{n}-{uuid.uuid4().hex[:8]}",
                        name=f"Product {n}",
                        price_cents=price,
                        perishable=perishable,
                    ),
                )
                self.product_ids.append(product.id)
                self.price[product.id] = price
                for k, (days, units) in enumerate(lots):
                    lot = inventory.receive_lot(
                        session,
                        self.system,
                        product.id,
                        LotReceive(
                            lot_number=f"P{n}-L{k}",
                            expiration_date=None
                            if days is None
                            else today() + timedelta(days=days),
                            quantity=units,
                        ),
                    )
                    self.lot_ids.append(lot.id)
                    self.on_hand[lot.id] = units
                    self.lot_status[lot.id] = "available"

        outcome = _attempt(self.connection, seed)
        assert not isinstance(outcome, PortalError), outcome

    # -- reading the database ----------------------------------------------------------
    def _read(self, query: Callable[[Session], T]) -> T:
        with Session(bind=self.connection, join_transaction_mode="create_savepoint") as s:
            return query(s)

    def _lots(self) -> dict[uuid.UUID, LotView]:
        def query(session: Session) -> dict[uuid.UUID, LotView]:
            rows = session.scalars(select(Lot).where(Lot.id.in_(self.lot_ids)))
            return {
                lot.id: LotView(
                    lot.id,
                    lot.product_id,
                    lot.expiration_date,
                    lot.quantity_on_hand,
                    lot.quantity_reserved,
                    lot.status,
                )
                for lot in rows
            }

        return self._read(query)

    def _allocations(self, order_id: uuid.UUID) -> dict[uuid.UUID, dict[uuid.UUID, int]]:
        """product -> lot -> units allocated to the order."""

        def query(session: Session) -> dict[uuid.UUID, dict[uuid.UUID, int]]:
            rows = session.execute(
                select(OrderItem.product_id, LotAllocation.lot_id, LotAllocation.quantity)
                .join(LotAllocation, LotAllocation.order_item_id == OrderItem.id)
                .where(OrderItem.order_id == order_id)
            ).all()
            result: dict[uuid.UUID, dict[uuid.UUID, int]] = defaultdict(dict)
            for product_id, lot_id, quantity in rows:
                result[product_id][lot_id] = quantity
            return dict(result)

        return self._read(query)

    def _items(self, order_id: uuid.UUID) -> dict[uuid.UUID, tuple[int, int]]:
        """product -> (quantity, unit price)."""
        return self._read(
            lambda s: {
                i.product_id: (i.quantity, i.unit_price_cents)
                for i in s.scalars(select(OrderItem).where(OrderItem.order_id == order_id))
            }
        )

    def _reservable(self, lot: LotView, free: int) -> bool:
        earliest = today() + timedelta(days=self.shelf_life)
        return (
            lot.status == "available"
            and (lot.expiration_date is None or lot.expiration_date >= earliest)
            and free > 0
        )

    def _expect_reservation(
        self,
        quantities: dict[uuid.UUID, int],
        before: dict[uuid.UUID, LotView],
        own: dict[uuid.UUID, int],
    ) -> tuple[bool, dict[uuid.UUID, int]]:
        """Whether the stock suffices, given `own` units released first; lot -> free units."""
        free = {lot.id: lot.on_hand - lot.reserved + own.get(lot.id, 0) for lot in before.values()}
        enough = all(
            sum(
                free[lot.id]
                for lot in before.values()
                if lot.product_id == product_id and self._reservable(lot, free[lot.id])
            )
            >= quantity
            for product_id, quantity in quantities.items()
        )
        return enough, free

    def _check_fefo(
        self,
        order_id: uuid.UUID,
        quantities: dict[uuid.UUID, int],
        before: dict[uuid.UUID, LotView],
        free_before: dict[uuid.UUID, int],
    ) -> None:
        """The order's units came from reservable lots, earliest expiry first."""
        after = self._lots()
        allocations = self._allocations(order_id)
        assert set(allocations) == set(quantities)
        for product_id, taken in allocations.items():
            assert sum(taken.values()) == quantities[product_id]
            for lot_id in taken:
                assert self._reservable(before[lot_id], free_before[lot_id]), (
                    f"allocated from unusable lot {before[lot_id]}"
                )
            latest = max(fefo_date(before[lot_id].expiration_date) for lot_id in taken)
            for lot in before.values():
                if (
                    lot.product_id == product_id
                    and self._reservable(lot, free_before[lot.id])
                    and fefo_date(lot.expiration_date) < latest
                ):
                    remaining = after[lot.id].on_hand - after[lot.id].reserved
                    assert remaining == 0, (
                        f"lot expiring {lot.expiration_date} kept {remaining} free units"
                        f" while a lot expiring {latest} was used"
                    )

    def _pick(self, order: uuid.UUID, pick: int | None, *statuses: str) -> uuid.UUID:
        """The drawn order or, when `pick` is drawn, an order in one of `statuses`: random
        draws alone mostly hit orders an earlier step already cancelled or expired."""
        fitting = [o for o, status in self.status.items() if status in statuses]
        return fitting[pick % len(fitting)] if pick is not None and fitting else order

    def _pick_lot(self, lot: int, pick: int | None, status: str) -> uuid.UUID:
        fitting = [i for i in self.lot_ids if self.lot_status[i] == status]
        return fitting[pick % len(fitting)] if pick is not None and fitting else self.lot_ids[lot]

    def _lines(self, lines: list[tuple[int, int]]) -> list[OrderLine]:
        return [OrderLine(product_id=self.product_ids[p], quantity=q) for p, q in lines]

    @staticmethod
    def _merged(lines: list[OrderLine]) -> dict[uuid.UUID, int]:
        quantities: dict[uuid.UUID, int] = defaultdict(int)
        for line in lines:
            quantities[line.product_id] += line.quantity
        return dict(quantities)

    # -- order rules ---------------------------------------------------------------------
    @initialize(
        target=orders,
        batch=st.lists(st.tuples(order_lines, st.sampled_from(LIFECYCLE)), max_size=4),
    )
    def first_orders(self, batch: list[tuple[list[tuple[int, int]], str]]) -> Any:
        """Each example starts with up to four orders, each taken to a random state, whichever
        rules it then uses (random rule choice alone rarely gets an order to fulfilled)."""
        created = []
        for lines, goal in batch:
            order = self._create(lines)
            if order is None:
                continue
            created.append(order)
            if goal in ("paid", "fulfilled"):
                self.mark_paid(order, None)
            if goal == "fulfilled":
                self.fulfil_order(order, None)
            if goal == "cancelled":
                self.cancel_order(order, None)
        return multiple(*created)

    @rule(target=orders, lines=order_lines)
    def create_order(self, lines: list[tuple[int, int]]) -> Any:
        order = self._create(lines)
        return multiple() if order is None else order

    def _create(self, lines: list[tuple[int, int]]) -> uuid.UUID | None:
        order_lines_ = self._lines(lines)
        quantities = self._merged(order_lines_)
        before = self._lots()
        enough, free = self._expect_reservation(quantities, before, {})

        def create(session: Session) -> tuple[uuid.UUID, datetime]:
            order = orders.create_order(
                session,
                self.doctor,
                OrderCreate(patient_id=self.patient_id, items=order_lines_),
            ).order
            return order.id, order.expires_at

        outcome = attempt(self.connection, create, "create")
        if not enough:
            assert isinstance(outcome, InsufficientStock), outcome
            return None
        assert not isinstance(outcome, PortalError), f"refused with stock available: {outcome}"
        order_id, expires_at = outcome
        self.status[order_id] = "pending"
        self.expires_at[order_id] = expires_at
        self._check_fefo(order_id, quantities, before, free)
        items = self._items(order_id)
        assert {p: q for p, (q, _) in items.items()} == quantities
        assert all(price == self.price[p] for p, (_, price) in items.items())
        return order_id

    @rule(order=orders, pick=picks, lines=order_lines)
    def edit_order(self, order: uuid.UUID, pick: int | None, lines: list[tuple[int, int]]) -> None:
        order = self._pick(order, pick, "pending")
        order_lines_ = self._lines(lines)
        quantities = self._merged(order_lines_)
        before = self._lots()
        own: dict[uuid.UUID, int] = defaultdict(int)
        for taken in self._allocations(order).values():
            for lot_id, units in taken.items():
                own[lot_id] += units
        old_items = self._items(order)
        enough, free = self._expect_reservation(quantities, before, own)

        outcome = attempt(
            self.connection,
            lambda s: orders.edit_items(s, self.doctor, order, order_lines_),
            "edit",
        )
        if self.status[order] != "pending":
            assert isinstance(outcome, InvalidStateTransition), outcome
        elif not enough:
            assert isinstance(outcome, InsufficientStock), outcome
        else:
            assert not isinstance(outcome, PortalError), f"edit refused: {outcome}"
        if isinstance(outcome, PortalError):
            assert self._items(order) == old_items
            return
        self._check_fefo(order, quantities, before, free)
        items = self._items(order)
        assert {p: q for p, (q, _) in items.items()} == quantities
        for product_id, (_, price) in items.items():
            kept = old_items.get(product_id)
            assert price == (kept[1] if kept else self.price[product_id])

    @rule(order=orders, pick=picks)
    def cancel_order(self, order: uuid.UUID, pick: int | None) -> None:
        order = self._pick(order, pick, *LIVE)
        outcome = attempt(
            self.connection,
            lambda s: order_flows.cancel_order(s, self.doctor, order, CancellationReason.OTHER),
            "cancel",
        )
        if self.status[order] in LIVE:
            assert not isinstance(outcome, PortalError), outcome
            self.status[order] = "cancelled"
        else:
            assert isinstance(outcome, InvalidStateTransition), outcome

    @rule(order=orders, pick=picks)
    def mark_paid(self, order: uuid.UUID, pick: int | None) -> None:
        order = self._pick(order, pick, "pending")
        outcome = attempt(self.connection, lambda s: orders.mark_paid(s, self.doctor, order), "pay")
        if self.status[order] == "pending":
            assert not isinstance(outcome, PortalError), outcome
            self.status[order] = "paid"
        else:
            assert isinstance(outcome, InvalidStateTransition), outcome

    @rule(order=orders, pick=picks)
    def fulfil_order(self, order: uuid.UUID, pick: int | None) -> None:
        order = self._pick(order, pick, "paid")
        allocations = self._allocations(order)
        usable = all(
            self.lot_status[lot_id] == "available"
            for taken in allocations.values()
            for lot_id in taken
        )
        outcome = attempt(
            self.connection, lambda s: orders.fulfil_order(s, self.system, order), "fulfil"
        )
        if self.status[order] == "paid" and usable:
            assert not isinstance(outcome, PortalError), outcome
            self.status[order] = "fulfilled"
            for taken in allocations.values():
                for lot_id, units in taken.items():
                    self.on_hand[lot_id] -= units
        else:
            assert isinstance(outcome, InvalidStateTransition), outcome

    def _expire(self, now: datetime) -> None:
        due = {o for o, s in self.status.items() if s == "pending" and self.expires_at[o] <= now}
        outcome = attempt(
            self.connection,
            lambda s: order_flows.expire_unpaid_orders(s, self.system, now=now),
            "expire",
        )
        assert outcome == len(due), (outcome, len(due))
        for order in due:
            self.status[order] = "cancelled"

    @rule(order=orders, far_future=st.integers(0, 3).map(lambda n: n == 0))
    def expire(self, order: uuid.UUID, far_future: bool) -> None:
        """Run expiry a year from now (every pending order is due), or at the moment this
        order's payment window closes (it and the pending orders created before it)."""
        self._expire(utcnow() + timedelta(days=365) if far_future else self.expires_at[order])

    # -- inventory rules -----------------------------------------------------------------
    @rule(
        lot=lot_index,
        delta=st.integers(-6, 6).filter(bool),
        counted=st.booleans(),
    )
    def adjust_stock(self, lot: int, delta: int, counted: bool) -> None:
        lot_id = self.lot_ids[lot]
        reason = "count_correction" if counted else ("damaged" if delta < 0 else "returned")
        reserved = self._lots()[lot_id].reserved
        outcome = attempt(
            self.connection,
            lambda s: inventory.adjust_stock(
                s, self.system, lot_id, StockAdjustment(delta=delta, reason=reason)
            ),
            "adjust",
        )
        if self.on_hand[lot_id] + delta >= reserved:
            assert not isinstance(outcome, PortalError), outcome
            self.on_hand[lot_id] += delta
        else:
            assert isinstance(outcome, InsufficientStock), outcome

    def _change_status(self, lot_id: uuid.UUID, target: str) -> None:
        outcome = attempt(
            self.connection,
            lambda s: inventory.change_status(
                s, self.system, lot_id, LotStatusChange(status=target, reason="test")
            ),
            f"lot -> {target}",
        )
        if target in inventory.LOT_TRANSITIONS[self.lot_status[lot_id]]:
            assert not isinstance(outcome, PortalError), outcome
            self.lot_status[lot_id] = target
        else:
            assert isinstance(outcome, InvalidStateTransition), outcome

    @rule(lot=lot_index)
    def recall_lot(self, lot: int) -> None:
        self._change_status(self.lot_ids[lot], "recalled")

    @rule(lot=lot_index, pick=picks, status=st.sampled_from(["quarantined", "available"]))
    def quarantine_or_release_lot(self, lot: int, pick: int | None, status: str) -> None:
        source = "available" if status == "quarantined" else "quarantined"
        self._change_status(self._pick_lot(lot, pick, source), status)

    @rule(product=product_index, price=st.integers(1, 5000))
    def reprice(self, product: int, price: int) -> None:
        product_id = self.product_ids[product]
        outcome = attempt(
            self.connection,
            lambda s: catalog.update_product(
                s, self.system, product_id, ProductUpdate(price_cents=price)
            ),
            "reprice",
        )
        assert not isinstance(outcome, PortalError), outcome
        self.price[product_id] = price

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def stock_and_orders_are_consistent(self) -> None:
        with Session(bind=self.connection, join_transaction_mode="create_savepoint") as s:
            lots = {lot.id: lot for lot in s.scalars(select(Lot).where(Lot.id.in_(self.lot_ids)))}
            for lot in lots.values():
                assert 0 <= lot.quantity_reserved <= lot.quantity_on_hand, lot
                assert lot.quantity_on_hand == self.on_hand[lot.id]
                assert lot.status == self.lot_status[lot.id]
            assert lots_disagreeing_with_ledger(s) == []

            # Each lot's reservations are exactly the allocations of the live orders.
            live_allocations = dict(
                s.execute(
                    select(LotAllocation.lot_id, func.sum(LotAllocation.quantity))
                    .join(OrderItem, OrderItem.id == LotAllocation.order_item_id)
                    .join(Order, Order.id == OrderItem.order_id)
                    .where(Order.status.in_(LIVE), LotAllocation.lot_id.in_(self.lot_ids))
                    .group_by(LotAllocation.lot_id)
                ).all()
            )
            for lot in lots.values():
                assert lot.quantity_reserved == live_allocations.get(lot.id, 0), lot

            db_orders = {o.id: o for o in s.scalars(select(Order).where(Order.id.in_(self.status)))}
            assert {o: order.status for o, order in db_orders.items()} == self.status
            items_by_order: dict[uuid.UUID, list[OrderItem]] = defaultdict(list)
            for item in s.scalars(select(OrderItem).where(OrderItem.order_id.in_(self.status))):
                items_by_order[item.order_id].append(item)
            allocated_by_item = dict(
                s.execute(
                    select(LotAllocation.order_item_id, func.sum(LotAllocation.quantity))
                    .join(OrderItem, OrderItem.id == LotAllocation.order_item_id)
                    .where(OrderItem.order_id.in_(self.status))
                    .group_by(LotAllocation.order_item_id)
                ).all()
            )
            ledger_by_order = {
                order_id: (int(on_hand), int(reserved))
                for order_id, on_hand, reserved in s.execute(
                    select(
                        StockMovement.order_id,
                        func.sum(StockMovement.delta_on_hand),
                        func.sum(StockMovement.delta_reserved),
                    )
                    .where(StockMovement.order_id.in_(self.status))
                    .group_by(StockMovement.order_id)
                ).all()
            }
            for order_id, order in db_orders.items():
                items = items_by_order[order_id]
                assert items, f"order {order_id} has no items"
                assert order.total_cents == sum(i.quantity * i.unit_price_cents for i in items)
                allocated = sum(allocated_by_item.get(i.id, 0) for i in items)
                for item in items:  # allocations are kept after fulfilment or cancellation
                    assert allocated_by_item.get(item.id, 0) == item.quantity, item
                on_hand_delta, reserved_delta = ledger_by_order.get(order_id, (0, 0))
                if order.status in LIVE:
                    assert (on_hand_delta, reserved_delta) == (0, allocated)
                elif order.status == "fulfilled":
                    assert (on_hand_delta, reserved_delta) == (-allocated, 0)
                else:  # cancelled: everything given back, nothing shipped
                    assert (on_hand_delta, reserved_delta) == (0, 0)


def test_random_order_and_stock_operations_keep_stock_and_orders_consistent(
    app_engine: Engine,
) -> None:
    run_state_machine_as_test(
        lambda: OrdersAndStock(app_engine),
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
