"""The stock sweep at the size the brief names: 10,000 products and 100,000 lots (with 30 days
of sales), found in two queries and synced in a handful of statements, first and again."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from app.actor import Actor
from app.inventory.flows import check_stock_alerts
from app.inventory.repository import today

PRODUCTS = 10_000
LOTS_PER_PRODUCT = 10
# Far above what it takes on a quiet 2-core machine (about 5 s for the first sweep, which opens
# some 9,500 alerts, and 1-2 s for the next): a loose guard against a per-product loop.
SECONDS = 60


def seed(db: Session) -> None:
    db.execute(
        text(
            "INSERT INTO products (id, sku, name, price_cents, par_level, reorder_quantity)"
            " SELECT gen_random_uuid(), 'SCALE-' || g, 'Scale product ' || g, 1000,"
            " (g % 7) * 20, 24 FROM generate_series(1, :n) g"
        ),
        {"n": PRODUCTS},
    )
    db.execute(
        text(
            "INSERT INTO lots (id, product_id, lot_number, expiration_date, quantity_on_hand,"
            " quantity_reserved, status)"
            " SELECT gen_random_uuid(), p.id, 'L' || g, CASE WHEN p.n % 100 = 0"
            " THEN current_date - CAST(g AS integer)"  # one product in 100: all stock expired
            " ELSE current_date + CAST((p.n * 31 + g * 7919) % 700 - 60 AS integer) END,"
            " 1 + (p.n + g) % 13, 0, CASE WHEN g % 50 = 0 THEN 'quarantined'"
            " WHEN g % 97 = 0 THEN 'recalled' ELSE 'available' END"
            " FROM (SELECT id, row_number() OVER () AS n FROM products"
            "       WHERE sku LIKE 'SCALE-%') p, generate_series(1, :lots) g"
        ),
        {"lots": LOTS_PER_PRODUCT},
    )
    db.execute(
        text(
            "INSERT INTO patients (id, name_encrypted, email_encrypted, phone_encrypted,"
            " date_of_birth_encrypted, email_hash) VALUES"
            " ('00000000-0000-0000-0000-00000000000a', 'n', 'e', 'p', 'd', 'scale')"
        )
    )
    db.execute(
        text(
            "WITH o AS (INSERT INTO orders (id, patient_id, status, total_cents, expires_at,"
            " paid_at) SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000000a',"
            " 'paid', 1000, now(), now() - ((g % 40) || ' days')::interval"
            " FROM generate_series(1, 20000) g RETURNING id)"
            " INSERT INTO order_items (id, order_id, product_id, quantity, unit_price_cents)"
            " SELECT gen_random_uuid(), o.id, p.id, 1 + (o.n % 4), 1000"
            " FROM (SELECT id, row_number() OVER () AS n FROM o) o"
            " JOIN (SELECT id, row_number() OVER () - 1 AS n FROM products"
            "       WHERE sku LIKE 'SCALE-%') p ON p.n = o.n % :products"
        ),
        {"products": PRODUCTS},
    )
    db.execute(text("ANALYZE products, lots, orders, order_items"))


def test_the_sweep_of_10000_products_and_100000_lots_is_a_few_set_based_statements(
    db: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(db)
    statements: list[str] = []

    def count(*args: Any) -> None:
        if not args[2].startswith(("SAVEPOINT", "RELEASE")):
            statements.append(args[2])

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        started = time.monotonic()
        first = check_stock_alerts(db, Actor.system("scale"))
        first_statements = len(statements)
        middle = time.monotonic()
        again = check_stock_alerts(db, Actor.system("scale"))
        elapsed = time.monotonic() - started
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Two years on every lot has expired: the expiring alerts clear, expired-only ones open.
    later = check_stock_alerts(db, Actor.system("scale"), today=today() + timedelta(730))

    with capsys.disabled():
        print(
            f"\nstock sweep, {PRODUCTS} products / {PRODUCTS * LOTS_PER_PRODUCT} lots:"
            f" first {middle - started:.1f} s ({first.opened} opened),"
            f" again {elapsed - (middle - started):.1f} s"
        )
    kinds = {key.split(":")[0] for key in first.opened_keys}
    assert kinds == {"low-stock", "expiring", "expired-only"}
    assert first.opened > 5_000 and first.cleared == 0
    assert (again.opened, again.cleared, again.still_open) == (0, 0, first.opened)
    # Two queries for the conditions; the topic lock, the open keys, the inserts (batches of
    # 5,000) and the subscribers for the sync.
    assert first_statements <= 2 + 3 + first.opened // 5_000 + 1
    assert len(statements) - first_statements <= 2 + 2
    assert elapsed < SECONDS, f"two sweeps took {elapsed:.1f} s"
    expiring = sum(key.startswith("expiring:") for key in first.opened_keys)
    assert later.cleared == expiring > 1_000
    # Products that kept sellable stock until then are now low too.
    assert {key.split(":")[0] for key in later.opened_keys} == {"expired-only", "low-stock"}
