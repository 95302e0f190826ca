"""Reserving stock for an order: first expiry first out across lots, unusable lots skipped, all or
nothing when stock is short, and never oversold by concurrent orders."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor, Role
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.config import get_settings
from app.db import make_engine
from app.errors import InsufficientStock
from app.inventory import service as inventory
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.inventory.schemas import LotReceive
from app.models import Lot, Order, User
from app.orders import service as orders
from app.orders.schemas import OrderCreate, OrderLine
from app.patients import service as patients
from app.patients.schemas import PatientCreate
from tests.fixtures.database import TestDatabase
from tests.fixtures.orders import (
    ORDERS,
    allocations_by_lot,
    assert_ledger_consistent,
    create_product,
    get_order,
    lot_counters,
    movements,
    order_body,
    order_row_counts,
    place_order,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json, user_id
from tests.fixtures.problems import assert_problem


def min_shelf_life() -> int:
    return get_settings().min_remaining_shelf_life_days


def test_stock_is_reserved_first_expiry_first_out_and_an_order_splits_across_lots(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    late = receive_lot(client, admin, product["id"], 10, expires_in_days=90)
    never = receive_lot(client, admin, product["id"], 50, expires_in_days=None)
    soonest = receive_lot(client, admin, product["id"], 4, expires_in_days=30)
    middle = receive_lot(client, admin, product["id"], 3, expires_in_days=60)

    order = place_order(client, doctor, patient["id"], (product["id"], 9))

    (item,) = order["items"]
    assert [(a["lot_id"], a["quantity"]) for a in item["allocations"]] == [
        (soonest["id"], 4),
        (middle["id"], 3),
        (late["id"], 2),
    ]
    assert [a["expiration_date"] for a in item["allocations"]] == [
        soonest["expiration_date"],
        middle["expiration_date"],
        late["expiration_date"],
    ]
    assert lot_counters(db, soonest["id"]) == (4, 4)
    assert lot_counters(db, middle["id"]) == (3, 3)
    assert lot_counters(db, late["id"]) == (10, 2)
    assert lot_counters(db, never["id"]) == (50, 0)
    # The answer to the POST (built from memory) is what a read shows.
    assert get_order(client, doctor, order["id"]) == {
        k: v for k, v in order.items() if k != "checkout_url"
    }
    # A second order continues where the first left off: the rest of `late`, then `never`.
    second = place_order(client, doctor, patient["id"], (product["id"], 10))
    assert allocations_by_lot(second) == {late["id"]: 8, never["id"]: 2}
    assert_ledger_consistent(db)


def test_lots_too_close_to_expiry_quarantined_recalled_or_expired_are_skipped(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    days = min_shelf_life()
    assert days >= 1
    too_soon = receive_lot(client, admin, product["id"], 100, expires_in_days=days - 1)
    just_enough = receive_lot(client, admin, product["id"], 2, expires_in_days=days)
    quarantined = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 1, status="quarantined"
    )
    recalled = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 2, status="recalled"
    )
    expired = receive_lot(
        client, admin, product["id"], 100, expires_in_days=days + 3, status="expired"
    )
    good = receive_lot(client, admin, product["id"], 10, expires_in_days=days + 200)

    order = place_order(client, doctor, patient["id"], (product["id"], 5))

    assert allocations_by_lot(order) == {just_enough["id"]: 2, good["id"]: 3}
    for skipped in (too_soon, quarantined, recalled, expired):
        assert lot_counters(db, skipped["id"]) == (100, 0)
        assert [m.reason for m in movements(db, lot_id=skipped["id"])] == ["receipt"]


def test_insufficient_stock_is_409_naming_the_product_and_reserves_nothing_for_any_item(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json
) -> None:
    first, second = sorted(
        (create_product(client, admin) for _ in range(2)), key=lambda p: p["id"]
    )  # `second` is also the one reserved second
    plenty = [receive_lot(client, admin, first["id"], 20, expires_in_days=d) for d in (30, 60)]
    receive_lot(client, admin, second["id"], 3, expires_in_days=100)
    receive_lot(client, admin, second["id"], 50, expires_in_days=100, status="quarantined")
    receive_lot(client, admin, second["id"], 50, expires_in_days=min_shelf_life() - 1)
    user_id(client, doctor)
    before = order_row_counts(db)

    response = client.post(
        ORDERS,
        json=order_body(patient["id"], (first["id"], 25), (second["id"], 4)),
        headers=doctor,
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert body["sku"] == second["sku"]
    assert body["product_id"] == second["id"]
    assert body["requested"] == 4
    assert body["available"] == 3  # only what could actually be reserved
    assert second["sku"] in body["detail"]
    assert order_row_counts(db) == before  # no order, items, allocations, movements or audit
    for lot in plenty:
        assert lot_counters(db, lot["id"]) == (20, 0)
    assert client.get(ORDERS, headers=doctor).json()["items"] == []
    assert_ledger_consistent(db)


def test_available_stock_excludes_units_reserved_by_other_orders(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], 5)
    place_order(client, doctor, patient["id"], (product["id"], 3))

    response = client.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 3)), headers=doctor
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert (body["requested"], body["available"]) == (3, 2)
    assert lot_counters(db, lot["id"]) == (5, 3)
    assert place_order(client, doctor, patient["id"], (product["id"], 2))["status"] == "pending"
    assert lot_counters(db, lot["id"]) == (5, 5)


def test_product_without_any_stock_is_409_with_nothing_available(
    client: TestClient, doctor: Headers, patient: Json, product: Json
) -> None:
    response = client.post(
        ORDERS, json=order_body(patient["id"], (product["id"], 1)), headers=doctor
    )

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert (body["sku"], body["requested"], body["available"]) == (product["sku"], 1, 0)


def test_concurrent_orders_for_the_last_units_never_oversell(fresh_db: TestDatabase) -> None:
    engine = make_engine(fresh_db.app_url, pool_size=6)
    factory = sessionmaker(engine, expire_on_commit=False)
    system = Actor.system("test")
    try:
        with factory() as session:
            doctor_row = User(email="race@example.com", role="doctor", oidc_subject="doctor-race")
            session.add(doctor_row)
            session.flush()
            actor = Actor(subject="doctor-race", role=Role.DOCTOR, user_id=doctor_row.id)
            patient = patients.create_patient(
                session,
                actor,
                PatientCreate(
                    name="Race Patient",
                    email="race.patient@example.com",
                    phone="+1 555 010 0100",
                    date_of_birth=date(1970, 1, 1),
                ),
            )
            product = catalog.create_product(
                session, system, ProductCreate(sku="RACE-1", name="Race", price_cents=100)
            )
            lots = [
                inventory.receive_lot(
                    session,
                    system,
                    product.id,
                    LotReceive(
                        lot_number=f"RACE-{n}",
                        quantity=3,
                        expiration_date=today() + timedelta(days=30 * n),
                    ),
                )
                for n in (1, 2)
            ]
            session.commit()

        threads = 6
        barrier = threading.Barrier(threads)

        def attempt(_: int) -> str:
            with factory() as session:
                barrier.wait(timeout=30)
                try:
                    orders.create_order(
                        session,
                        actor,
                        OrderCreate(
                            patient_id=patient.id,
                            items=[OrderLine(product_id=product.id, quantity=2)],
                        ),
                    )
                    session.commit()
                    return "ok"
                except InsufficientStock:
                    session.rollback()
                    return "short"

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(attempt, range(threads)))

        assert sorted(results) == ["ok"] * 3 + ["short"] * 3  # 6 units, 2 each
        with factory() as session:
            reserved = {
                lot.lot_number: (lot.quantity_on_hand, lot.quantity_reserved)
                for lot in session.scalars(select(Lot).where(Lot.id.in_([x.id for x in lots])))
            }
            assert reserved == {"RACE-1": (3, 3), "RACE-2": (3, 3)}
            assert session.scalar(select(func.count()).select_from(Order)) == 3
            assert lots_disagreeing_with_ledger(session) == []
    finally:
        engine.dispose()
