"""`portal alerts check`: one stock sweep, committed, reported."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.db import make_engine
from app.inventory import service as inventory
from app.inventory.repository import today
from app.inventory.schemas import LotReceive
from app.models import Alert
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase


def seed(database: TestDatabase) -> None:
    """A product under par ("[bold]" in its name: printed as typed) and a lot expiring soon."""
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            system = Actor.system("test-seed")
            low = catalog.create_product(
                session,
                system,
                ProductCreate(
                    sku="GAUZE-10", name="Gauze [bold]pads[/bold]", price_cents=500, par_level=10
                ),
            )
            inventory.receive_lot(
                session,
                system,
                low.id,
                LotReceive(
                    lot_number="G-1", quantity=3, expiration_date=today() + timedelta(days=5)
                ),
            )
    finally:
        engine.dispose()


def open_alerts(database: TestDatabase) -> int:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            count = session.scalar(
                select(func.count()).select_from(Alert).where(Alert.cleared_at.is_(None))
            )
            return int(count or 0)
    finally:
        engine.dispose()


def test_alerts_check_opens_once_then_reports_what_is_still_open(fresh_db: TestDatabase) -> None:
    seed(fresh_db)

    first = run_portal(fresh_db, "alerts", "check")
    assert first.returncode == 0, first.stderr
    assert "2 opened, 0 cleared, 0 still open" in first.stdout
    assert "opened: Low stock: 3 sellable, par 10" in first.stdout
    assert "Gauze [bold]pads[/bold]" in first.stdout
    assert "opened: Expiring: lot G-1" in first.stdout
    assert open_alerts(fresh_db) == 2

    second = run_portal(fresh_db, "alerts", "check")
    assert second.returncode == 0, second.stderr
    assert "0 opened, 0 cleared, 2 still open; 0 messages queued" in second.stdout
    assert "still open: Low stock" in second.stdout

    later = (today() + timedelta(days=6)).isoformat()
    moved = run_portal(fresh_db, "alerts", "check", "--today", later)
    assert moved.returncode == 0, moved.stderr
    # Six days on the lot has expired: not "expiring" any more, and the product's only stock.
    assert "1 opened, 1 cleared, 1 still open" in moved.stdout
    assert "opened: Only expired stock" in moved.stdout


def test_alerts_check_refuses_a_day_that_is_not_a_date(fresh_db: TestDatabase) -> None:
    result = run_portal(fresh_db, "alerts", "check", "--today", "tomorrow")
    assert result.returncode == 2
    assert open_alerts(fresh_db) == 0
