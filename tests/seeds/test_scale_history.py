"""`portal seed scale --orders N`: 18 months of order history that satisfies every invariant
of the portal's data, in the mix the data platform needs, deterministic for a seed, and without
PHI in clear."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine

from app import phi
from app.models.status import CancellationReason, LotStatus
from app.orders.service import cancellation_note_context
from app.patients.service import phi_context
from devtools.scale import (
    HISTORY_DAYS,
    HistoryAlreadyLoaded,
    HistoryResult,
    check_invariants,
    seed_history,
)
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase, create_database, drop_database

ORDERS = 2_000
PRODUCTS = 150
TABLES = (
    "users",
    "patients",
    "products",
    "lots",
    "stock_movements",
    "orders",
    "order_items",
    "lot_allocations",
    "payments",
    "payment_refunds",
)


def _one(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _counts(url: str, query: str) -> dict[object, float]:
    """`key -> number` from a query returning (key, number) rows."""
    return {key: float(str(n)) for key, n in _all(url, query)}


def _all(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def loaded(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[tuple[TestDatabase, HistoryResult]]:
    """One load of 2,000 orders, shared by the read-only checks of this module."""
    app_engine.dispose()  # the template must be free of sessions (see `fresh_db`)
    database = create_database(pg_server, template=template_db.name)
    result = seed_history(database.owner_url, orders=ORDERS, products=PRODUCTS, seed=11)
    yield database, result
    drop_database(pg_server, database.name)


def test_every_invariant_of_the_data_holds(loaded: tuple[TestDatabase, HistoryResult]) -> None:
    database, _ = loaded
    assert check_invariants(database.owner_url) == {
        name: 0 for name in check_invariants(database.owner_url)
    }


def test_the_counts_add_up(loaded: tuple[TestDatabase, HistoryResult]) -> None:
    database, result = loaded
    for table in TABLES:
        assert _one(database.owner_url, f"SELECT count(*) FROM {table}") == result.rows[table]
    assert result.rows["orders"] == ORDERS
    assert result.rows["products"] == PRODUCTS
    assert result.rows["patients"] == ORDERS // 8
    # Each item has one allocation, a reservation, and (unless still open) its fulfilment or
    # release; each lot has its receipt.
    assert result.rows["lot_allocations"] == result.rows["order_items"]
    assert result.rows["stock_movements"] >= result.rows["lots"] + result.rows["order_items"]
    assert result.foreign_keys == "checked after the load"  # the owner is a superuser here


def test_orders_span_18_months_with_a_weekly_rhythm(
    loaded: tuple[TestDatabase, HistoryResult],
) -> None:
    database, _ = loaded
    first, last = _all(database.owner_url, "SELECT min(created_at), max(created_at) FROM orders")[0]
    assert isinstance(first, datetime) and isinstance(last, datetime)
    now = datetime.now(UTC)
    assert now - timedelta(days=HISTORY_DAYS + 1) <= first < now - timedelta(days=HISTORY_DAYS - 3)
    assert now - timedelta(days=2) < last <= now
    # Weekdays are busier than Sundays (ISO day of week 7).
    per_day = _counts(
        database.owner_url,
        """SELECT extract(isodow FROM created_at)::int, count(*)::float
                      / count(DISTINCT created_at::date)
               FROM orders GROUP BY 1""",
    )
    assert per_day[2] > 2 * per_day[7]


def test_the_mix_has_every_kind_of_order_and_payment(
    loaded: tuple[TestDatabase, HistoryResult],
) -> None:
    database, _ = loaded
    url = database.owner_url
    methods = _counts(url, "SELECT method, count(*) FROM payments GROUP BY 1")
    assert methods["card"] > methods["us_bank_account"] > 0
    statuses = _counts(url, "SELECT status, count(*) FROM orders GROUP BY 1")
    assert statuses["fulfilled"] > ORDERS * 0.7
    assert {"pending", "paid", "cancelled"} <= set(statuses)
    codes = {row[0] for row in _all(url, "SELECT DISTINCT cancellation_code FROM orders")}
    assert {
        CancellationReason.PAYMENT_EXPIRED,
        CancellationReason.REFUNDED_AT_STRIPE,
        CancellationReason.PATIENT_REQUEST,
    } <= codes
    refunds = _all(
        url,
        """SELECT count(*) FILTER (WHERE refunded_cents = amount_cents),
                  count(*) FILTER (WHERE refunded_cents BETWEEN 1 AND amount_cents - 1),
                  count(*) FILTER (WHERE refunded_after_fulfilment),
                  count(*) FILTER (WHERE disputed)
           FROM payments""",
    )[0]
    full, partial, after_fulfilment, disputed = (int(str(n)) for n in refunds)
    assert full > 0 and partial > 0 and after_fulfilment > 0 and disputed > 0
    # ACH debits still processing, and failed payments of orders that expired.
    payments = _counts(url, "SELECT status, count(*) FROM payments GROUP BY 1")
    assert payments["processing"] > 0 and payments["requires_payment_method"] > 0
    lots = _counts(url, "SELECT status, count(*) FROM lots GROUP BY 1")
    assert lots[LotStatus.EXPIRED] > 0 and lots[LotStatus.RECALLED] > 0
    assert lots[LotStatus.AVAILABLE] >= PRODUCTS  # every product has a current lot


def test_popular_products_sell_most_units(loaded: tuple[TestDatabase, HistoryResult]) -> None:
    database, _ = loaded
    units = [
        int(str(row[0]))
        for row in _all(
            database.owner_url,
            "SELECT sum(quantity) FROM order_items GROUP BY product_id ORDER BY 1 DESC",
        )
    ]
    top_tenth = sum(units[: PRODUCTS // 10])
    assert top_tenth > 0.4 * sum(units)


def test_phi_is_encrypted_as_the_app_encrypts_it(
    loaded: tuple[TestDatabase, HistoryResult],
) -> None:
    database, _ = loaded
    url = database.owner_url
    rows = _all(
        url,
        "SELECT id, name_encrypted, email_encrypted, phone_encrypted, date_of_birth_encrypted,"
        " email_hash FROM patients",
    )
    emails = []
    for patient_id, *sealed, email_hash in rows:
        assert all(str(value).startswith("enc1:") for value in sealed)
        fields = ("name", "email", "phone", "date_of_birth")
        clear = {
            f: phi.decrypt(str(v), phi_context(patient_id, f))  # type: ignore[arg-type]
            for f, v in zip(fields, sealed, strict=True)
        }
        assert email_hash == phi.lookup_hash(phi.normalise_email(clear["email"]))
        datetime.fromisoformat(clear["date_of_birth"])
        emails.append(clear["email"])
    # No clear value anywhere in the database's loaded tables or the audit log.
    for table in (*TABLES, "audit_log"):
        for probe in (emails[0], emails[-1], "@patients.example"):
            found = _one(
                url, f"SELECT count(*) FROM {table} t WHERE to_jsonb(t)::text LIKE '%{probe}%'"
            )
            assert found == 0, f"{probe} in {table}"
    notes = _all(
        url,
        "SELECT id, cancellation_note_encrypted FROM orders"
        " WHERE cancellation_note_encrypted IS NOT NULL",
    )
    assert notes
    for order_id, note in notes:
        phi.decrypt(str(note), cancellation_note_context(order_id))  # type: ignore[arg-type]


CONTENT = {
    "orders": "id, patient_id, doctor_id, status, total_cents, created_at, paid_at, fulfilled_at,"
    " cancelled_at, cancellation_code",
    "order_items": "id, order_id, product_id, quantity, unit_price_cents",
    "lot_allocations": "id, order_item_id, lot_id, quantity",
    "lots": "id, product_id, lot_number, expiration_date, quantity_on_hand, quantity_reserved,"
    " status",
    "stock_movements": "id, lot_id, delta_on_hand, delta_reserved, reason, order_id, created_at",
    "payments": "id, order_id, stripe_payment_intent_id, status, method, amount_cents,"
    " refunded_cents, disputed",
    "payment_refunds": "stripe_refund_id, payment_id, amount_cents, status",
    "patients": "id, doctor_id, email_hash, created_at",
    "products": "id, sku, price_cents, perishable",
}


def _fingerprint(url: str) -> dict[str, str]:
    return {
        table: str(
            _one(
                url,
                "SELECT md5(string_agg(t::text, ',' ORDER BY t::text))"
                f" FROM (SELECT {columns} FROM {table}) t",
            )
        )
        for table, columns in CONTENT.items()
    }


def test_the_same_seed_gives_the_same_history(
    fresh_db: TestDatabase, pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> None:
    app_engine.dispose()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    other = create_database(pg_server, template=template_db.name)
    try:
        # The app role loads with the foreign keys checked row by row; the owner after the load.
        slow = seed_history(fresh_db.app_url, orders=300, products=40, seed=5, now=now)
        fast = seed_history(other.owner_url, orders=300, products=40, seed=5, now=now)
        assert slow.foreign_keys == "checked per row"
        assert fast.foreign_keys == "checked after the load"
        assert slow.rows == fast.rows
        assert _fingerprint(fresh_db.owner_url) == _fingerprint(other.owner_url)
        # Another seed is another history, loadable next to the first; the same seed is refused.
        seed_history(other.owner_url, orders=300, products=40, seed=6, now=now)
        assert _fingerprint(other.owner_url)["orders"] != _fingerprint(fresh_db.owner_url)["orders"]
        with pytest.raises(HistoryAlreadyLoaded):
            seed_history(other.owner_url, orders=10, products=5, seed=5, now=now)
        assert check_invariants(other.owner_url) == dict.fromkeys(
            check_invariants(other.owner_url), 0
        )
    finally:
        drop_database(pg_server, other.name)


def test_portal_seed_scale_orders_loads_and_audits_once(fresh_db: TestDatabase) -> None:
    result = run_portal(
        fresh_db, "seed", "scale", "--orders", "400", "--products", "30", "--seed", "3"
    )
    assert result.returncode == 0, result.stderr
    assert "rows/s" in result.stdout and "orders" in result.stdout
    assert _one(fresh_db.owner_url, "SELECT count(*) FROM orders") == 400
    entries = _all(
        fresh_db.owner_url,
        "SELECT actor_subject, entity_type, after FROM audit_log"
        " WHERE action = 'history.bulk_loaded'",
    )
    assert len(entries) == 1
    subject, entity_type, after = entries[0]
    assert entity_type == "seed" and "seed-scale" in str(subject)
    assert isinstance(after, dict) and after["orders"] == 400 and after["seed"] == 3
    assert _one(fresh_db.owner_url, "SELECT count(*) FROM audit_log") == 1
    again = run_portal(
        fresh_db, "seed", "scale", "--orders", "10", "--products", "5", "--seed", "3"
    )
    assert again.returncode == 1 and "already" in again.stdout


def test_a_tiny_history_is_sound(fresh_db: TestDatabase, app_engine: Engine) -> None:
    # One product: orders of several lines cannot pick distinct products, so they get one.
    result = seed_history(fresh_db.owner_url, orders=50, products=1, seed=2)
    assert result.rows["orders"] == 50 and result.rows["products"] == 1
    assert check_invariants(fresh_db.owner_url) == dict.fromkeys(
        check_invariants(fresh_db.owner_url), 0
    )
    with pytest.raises(ValueError, match="at least 1"):
        seed_history(fresh_db.owner_url, orders=0, products=1, seed=3)


def test_lots_cannot_be_given_with_orders(fresh_db: TestDatabase) -> None:
    result = run_portal(fresh_db, "seed", "scale", "--orders", "10", "--lots", "5")
    assert result.returncode == 2
    assert "--lots" in result.stdout
    assert _one(fresh_db.owner_url, "SELECT count(*) FROM orders") == 0
