"""`portal pharmacy drain` delivers and polls from the command line, against the reference
pharmacy, on a committed database; it prints counts, never the pharmacy's messages."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.actor import Actor
from app.db import make_engine
from app.models import Order, OrderItem, PharmacySubmission, Product
from app.models.status import OrderStatus
from app.orders import flows as order_flows
from app.pharmacy import service
from app.pharmacy.schemas import PharmacyCreate
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase
from tests.fixtures.pharmacy import ReferencePharmacy
from tests.fixtures.pharmacy_orders import API_KEY
from tests.fixtures.pipelines import seed_demo_data


def _paid_prescription_order(database: TestDatabase, base_url: str) -> uuid.UUID:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            actor = Actor.system("test")
            service.create_pharmacy(
                session,
                actor,
                PharmacyCreate(
                    name="Reference",
                    connector="fhir_r4",
                    base_url=base_url,
                    auth_kind="api_key",
                    auth_header="X-Api-Key",
                    api_key=API_KEY,
                    is_default=True,
                ),
            )
            order = session.scalar(
                select(Order).where(Order.status == OrderStatus.PENDING).order_by(Order.created_at)
            )
            assert order is not None
            session.execute(
                update(Product)
                .where(
                    Product.id.in_(
                        select(OrderItem.product_id).where(OrderItem.order_id == order.id)
                    )
                )
                .values(requires_prescription=True)
            )
            order_flows.mark_paid(session, actor, order)
            return order.id
    finally:
        engine.dispose()


def _status(database: TestDatabase, order_id: uuid.UUID) -> str | None:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            return session.scalar(
                select(PharmacySubmission.status).where(PharmacySubmission.order_id == order_id)
            )
    finally:
        engine.dispose()


def test_drain_delivers_then_polls_until_nothing_is_due(
    fresh_db: TestDatabase, reference_pharmacy: ReferencePharmacy
) -> None:
    seed_demo_data(fresh_db)
    order_id = _paid_prescription_order(fresh_db, reference_pharmacy.base_url)

    # The pharmacy is down: one round, the submission waits for its retry; exit code 0.
    reference_pharmacy.faults(down=True)
    once = run_portal(fresh_db, "pharmacy", "drain", "--once")
    assert once.returncode == 0, once.stdout + once.stderr
    assert "1 to retry" in once.stdout and "1 failed call(s)" in once.stdout
    assert _status(fresh_db, order_id) == "pending"

    reference_pharmacy.faults(down=False)
    _make_due(fresh_db, order_id)  # as if its backoff had passed
    drained = run_portal(fresh_db, "pharmacy", "drain")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "1 delivered" in drained.stdout
    assert _status(fresh_db, order_id) in ("submitted", "accepted")
    # One MedicationRequest per item of the order, each received once.
    assert reference_pharmacy.stats()["distinct_requests"] == _items(fresh_db, order_id)
    assert API_KEY not in drained.stdout + drained.stderr + once.stdout + once.stderr


def _make_due(database: TestDatabase, order_id: uuid.UUID) -> None:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                update(PharmacySubmission)
                .where(PharmacySubmission.order_id == order_id)
                .values(next_attempt_at=PharmacySubmission.created_at)
            )
    finally:
        engine.dispose()


def _items(database: TestDatabase, order_id: uuid.UUID) -> int:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            return len(
                list(session.scalars(select(OrderItem.id).where(OrderItem.order_id == order_id)))
            )
    finally:
        engine.dispose()
