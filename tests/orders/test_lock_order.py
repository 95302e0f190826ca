"""Lot locks are always taken in one round, in lot-id order, so order writers cannot deadlock.

A new order locks every candidate lot in one statement, in id order. An edit or the expiry job
that released some lots first and locked more afterwards would hold a higher lot while waiting
for a lower one that a concurrent new order holds while waiting for the higher: a deadlock,
which PostgreSQL breaks by failing one of them. These tests build exactly that interleaving on
a committed database: a second transaction holds the lower lot (as a concurrent reservation
would, mid-statement), the edit or expiry starts and blocks, then the second transaction
reserves both lots. Both must succeed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor, Role
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.db import make_engine
from app.inventory import service as inventory
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.inventory.schemas import LotReceive, LotStatusChange
from app.models import Lot, User
from app.models.base import utcnow
from app.orders import flows as order_flows
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.patients import service as patients
from app.patients.schemas import PatientCreate
from tests.fixtures.database import TestDatabase

SYSTEM = Actor.system("test")


@dataclass
class Stock:
    factory: sessionmaker[Session]
    engine: Engine
    doctor: Actor
    patient_id: uuid.UUID
    product_id: uuid.UUID
    low: uuid.UUID  # the lot with the smaller id: locked first by every reservation
    high: uuid.UUID


@pytest.fixture
def stock(fresh_db: TestDatabase) -> Iterator[Stock]:
    """A doctor, a patient and one product with two lots of 10, committed."""
    engine = make_engine(fresh_db.app_url, pool_size=6)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        user = User(email="locks@example.com", role="doctor", oidc_subject="doctor-locks")
        session.add(user)
        session.flush()
        doctor = Actor(subject="doctor-locks", role=Role.DOCTOR, user_id=user.id)
        patient = patients.create_patient(
            session,
            doctor,
            PatientCreate(
                name="Lock Patient",
                email="lock.patient@example.com",
                phone="+1 555 010 0111",
                date_of_birth=date(1960, 5, 5),
            ),
        )
        product = catalog.create_product(
            session, SYSTEM, ProductCreate(sku="LOCK-1", name="Lock", price_cents=100)
        )
        lots = sorted(
            inventory.receive_lot(
                session,
                SYSTEM,
                product.id,
                LotReceive(
                    lot_number=f"LOCK-{n}",
                    quantity=10,
                    expiration_date=today() + timedelta(days=60),
                ),
            ).id
            for n in (1, 2)
        )
        session.commit()
    yield Stock(factory, engine, doctor, patient.id, product.id, lots[0], lots[1])
    engine.dispose()


def set_status(stock: Stock, lot_id: uuid.UUID, status: str) -> None:
    with stock.factory() as session:
        inventory.change_status(
            session, SYSTEM, lot_id, LotStatusChange(status=status, reason="test")
        )
        session.commit()


def order_from(stock: Stock, lot_id: uuid.UUID, quantity: int) -> uuid.UUID:
    """A committed pending order whose units all come from `lot_id` (the other is quarantined
    while it is placed)."""
    other = stock.high if lot_id == stock.low else stock.low
    set_status(stock, other, "quarantined")
    with stock.factory() as session:
        order = orders.create_order(
            session,
            stock.doctor,
            OrderCreate(
                patient_id=stock.patient_id,
                items=[OrderLine(product_id=stock.product_id, quantity=quantity)],
            ),
        ).order
        session.commit()
    set_status(stock, other, "available")
    return order.id


def wait_until_someone_waits_for_a_lock(
    engine: Engine, outcome: dict[str, Any], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if waiting:
                return
            connection.rollback()  # pg_stat_activity is a snapshot per transaction
            time.sleep(0.02)
    raise AssertionError(f"the background transaction never waited for a lock: {outcome}")


def race_with_a_new_order(stock: Stock, background: Callable[[Session], Any]) -> dict[str, Any]:
    """Hold the lower lot, start `background` and let it block, then reserve both lots."""
    outcome: dict[str, Any] = {}
    holder = stock.factory()
    holder.execute(select(Lot.id).where(Lot.id == stock.low).with_for_update())

    def run() -> None:
        with stock.factory() as session:
            try:
                outcome["background"] = background(session)
                session.commit()
            except Exception as exc:  # a deadlock victim lands here
                session.rollback()
                outcome["background"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until_someone_waits_for_a_lock(stock.engine, outcome)
        try:
            orders.create_order(
                holder,
                stock.doctor,
                OrderCreate(
                    patient_id=stock.patient_id,
                    items=[OrderLine(product_id=stock.product_id, quantity=12)],
                ),
            )
            holder.commit()
            outcome["new order"] = "ok"
        except Exception as exc:
            holder.rollback()
            outcome["new order"] = exc
    finally:
        holder.close()
        thread.join(timeout=60)
    return outcome


def counters(stock: Stock) -> dict[str, tuple[int, int]]:
    with stock.factory() as session:
        assert lots_disagreeing_with_ledger(session) == []
        return {
            name: (lot.quantity_on_hand, lot.quantity_reserved)
            for name, lot in (
                ("low", session.get(Lot, stock.low)),
                ("high", session.get(Lot, stock.high)),
            )
            if lot is not None
        }


def test_editing_an_order_while_a_new_order_reserves_the_same_lots_does_not_deadlock(
    stock: Stock,
) -> None:
    order_id = order_from(stock, stock.high, 2)

    def edit(session: Session) -> str:
        orders.edit_items(
            session,
            stock.doctor,
            order_id,
            [OrderLine(product_id=stock.product_id, quantity=3)],
        )
        return "ok"

    outcome = race_with_a_new_order(stock, edit)

    assert outcome == {"background": "ok", "new order": "ok"}
    assert sum(reserved for _, reserved in counters(stock).values()) == 12 + 3


def test_expiring_orders_while_a_new_order_reserves_the_same_lots_does_not_deadlock(
    stock: Stock,
) -> None:
    # Expired in this order: first the one holding the higher lot, then the lower.
    order_from(stock, stock.high, 4)
    order_from(stock, stock.low, 4)

    def expire(session: Session) -> int:
        return order_flows.expire_unpaid_orders(session, SYSTEM, now=utcnow() + timedelta(days=30))

    outcome = race_with_a_new_order(stock, expire)

    assert outcome == {"background": 2, "new order": "ok"}
    assert sum(reserved for _, reserved in counters(stock).values()) == 12
