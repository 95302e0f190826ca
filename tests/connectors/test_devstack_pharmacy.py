"""`portal up` configures the reference pharmacy it starts, so a paid demo prescription order
reaches it: created once (the default pharmacy when there is none), moved when its port
changes, and a paid order is delivered to it and comes back dispensed."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.pharmacy import flows
from devtools.devstack import REFERENCE_PHARMACY_NAME, ensure_reference_pharmacy
from tests.fixtures.database import TestDatabase
from tests.fixtures.pharmacy import ReferencePharmacy
from tests.fixtures.pharmacy_faults import seed_paid_orders


def pharmacies(owner_url: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(owner_url) as conn:
        rows = conn.execute(
            "SELECT name, base_url, is_default FROM pharmacies ORDER BY name"
        ).fetchall()
    return [(str(a), str(b), bool(c)) for a, b, c in rows]


def test_the_reference_pharmacy_is_configured_once_and_follows_its_port(
    fresh_db: TestDatabase,
) -> None:
    first = ensure_reference_pharmacy(fresh_db.app_url, "http://127.0.0.1:8799")
    assert first == f"{REFERENCE_PHARMACY_NAME} configured as the default pharmacy"
    assert ensure_reference_pharmacy(fresh_db.app_url, "http://127.0.0.1:8799") is None
    moved = ensure_reference_pharmacy(fresh_db.app_url, "http://127.0.0.1:8798")
    assert moved == f"{REFERENCE_PHARMACY_NAME} moved to http://127.0.0.1:8798"
    assert pharmacies(fresh_db.owner_url) == [
        (REFERENCE_PHARMACY_NAME, "http://127.0.0.1:8798", True)
    ]


def test_a_paid_order_reaches_the_reference_pharmacy_and_comes_back_dispensed(
    fresh_db: TestDatabase, reference_pharmacy: ReferencePharmacy
) -> None:
    added = ensure_reference_pharmacy(fresh_db.app_url, reference_pharmacy.base_url)
    assert added == f"{REFERENCE_PHARMACY_NAME} configured as the default pharmacy"
    seeded = seed_paid_orders(fresh_db.app_url, None, orders=1, refused=0)
    reference_pharmacy.settings(dispense_delay_seconds=0.2)
    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        assert flows.drain(sessions, once=True).delivery.delivered == 1
        time.sleep(0.3)
        with psycopg.connect(fresh_db.owner_url) as conn:
            conn.execute("UPDATE pharmacy_submissions SET last_polled_at = NULL")
        assert flows.drain(sessions, once=True).polls.changed == 1
    finally:
        engine.dispose()
    with psycopg.connect(fresh_db.owner_url) as conn:
        row = conn.execute(
            "SELECT status FROM pharmacy_submissions WHERE order_id = %s::uuid",
            (seeded.order_ids[0],),
        ).fetchone()
    assert row is not None and row[0] == "dispensed"
    assert reference_pharmacy.stats()["dispensed"] == 1


def test_an_existing_default_pharmacy_stays_the_default(fresh_db: TestDatabase) -> None:
    seed_paid_orders(fresh_db.app_url, "http://127.0.0.1:8797", orders=0, refused=0)
    added = ensure_reference_pharmacy(fresh_db.app_url, "http://127.0.0.1:8799")
    assert added == f"{REFERENCE_PHARMACY_NAME} configured as a pharmacy"
    defaults = [name for name, _, default in pharmacies(fresh_db.owner_url) if default]
    assert len(defaults) == 1 and defaults[0] != REFERENCE_PHARMACY_NAME
