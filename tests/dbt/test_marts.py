"""The dbt project on a small history of the portal: one `dbt build`, then the marts' numbers
against what the history says by hand, an incremental run that picks up late changes, the
project's tests failing on broken data, the docs, and what the analyst role may read.

The module shares one database and four dbt invocations (each costs seconds); its tests run in
file order, the ones that change data last.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from sqlalchemy import Engine

from app.config import get_settings
from app.db import with_user
from tests.fixtures.analytics import (
    X_PRICE,
    History,
    database_with_history,
    dbt_output,
    run_dbt_for,
)
from tests.fixtures.database import TestDatabase

MARTS = {
    "dim_date",
    "dim_products",
    "fct_fulfilment_times",
    "fct_inventory_velocity",
    "fct_lot_expiry",
    "fct_monthly_metrics",
    "fct_order_items",
    "fct_orders",
    "fct_orders_daily",
    "fct_payments",
    "fct_revenue_daily",
}


@pytest.fixture(scope="module")
def history_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[tuple[TestDatabase, History]]:
    yield from database_with_history(pg_server, template_db, app_engine)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dbt")


@pytest.fixture(scope="module")
def built(history_db: tuple[TestDatabase, History], work: Path) -> tuple[TestDatabase, History]:
    database, history = history_db
    result = run_dbt_for(database, work, "build", as_of=history.today)
    assert result.returncode == 0, dbt_output(result)
    return database, history


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def test_marts_land_in_analytics_and_the_models_before_them_elsewhere(
    built: tuple[TestDatabase, History],
) -> None:
    database, _ = built
    found = rows(
        database.owner_url,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables"
        " WHERE table_schema LIKE 'analytics%%'",
    )
    by_schema: dict[str, set[str]] = defaultdict(set)
    for row in found:
        by_schema[row["table_schema"]].add(row["table_name"])
    assert by_schema["analytics"] == MARTS
    assert "stg_portal__patients" in by_schema["analytics_staging"]
    assert by_schema["analytics_intermediate"] == {"int_refund_events"}
    # PHI stays in the source: staging keeps the keys and non-identifying facts only.
    columns = rows(
        database.owner_url,
        "SELECT table_name, array_agg(column_name::text ORDER BY column_name) AS names"
        " FROM information_schema.columns WHERE table_schema = 'analytics_staging'"
        " AND table_name IN ('stg_portal__patients', 'stg_portal__users') GROUP BY table_name",
    )
    assert {c["table_name"]: c["names"] for c in columns} == {
        "stg_portal__patients": ["created_at", "doctor_id", "is_self_registered", "patient_id"],
        "stg_portal__users": ["staff_role", "user_id"],
    }
    assert all(
        row["table_type"] == "BASE TABLE" for row in found if row["table_schema"] == "analytics"
    )


def test_daily_revenue_is_gross_refunds_and_net_per_day_and_method(
    built: tuple[TestDatabase, History],
) -> None:
    database, history = built
    mart = {
        (r["revenue_date"], r["payment_method"]): (
            r["gross_cents"],
            r["refunds_cents"],
            r["net_cents"],
            r["net_amount"],
        )
        for r in rows(database.owner_url, "SELECT * FROM analytics.fct_revenue_daily")
    }
    assert mart == {
        key: (gross, refunds, gross - refunds, Decimal(gross - refunds) / 100)
        for key, (gross, refunds) in history.revenue().items()
    }
    # The full refund Stripe reported only as the charge's total counts on the day the payment
    # changed; the failed refund of 700 cents counts nowhere.
    assert mart[(history.day(3), "us_bank_account")][1] == 2500
    assert mart[(history.day(5), "card")][1] == 1000


def test_monthly_metrics_add_up_orders_revenue_and_patients(
    built: tuple[TestDatabase, History],
) -> None:
    database, history = built
    months: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (day, _), (gross, refunds) in history.revenue().items():
        month = months[day.replace(day=1)]
        month["gross_cents"] += gross
        month["refunds_cents"] += refunds
    for days_ago in (10, 10, 4, 1):  # payments that succeeded
        months[history.day(days_ago).replace(day=1)]["payments_count"] += 1
    for days_ago in (10, 10, 5, 2, 40, 1):  # o1..o6 created
        months[history.day(days_ago).replace(day=1)]["orders_placed"] += 1
    for days_ago in (60, 5, 2):  # patients
        months[history.day(days_ago).replace(day=1)]["new_patients"] += 1
    monthly = rows(database.owner_url, "SELECT * FROM analytics.fct_monthly_metrics")
    mart = {r["month_start"]: r for r in monthly}
    assert set(mart) == set(months)
    for month, expected in months.items():
        row = mart[month]
        assert row["gross_cents"] == expected["gross_cents"]
        assert row["refunds_cents"] == expected["refunds_cents"]
        assert row["net_cents"] == expected["gross_cents"] - expected["refunds_cents"]
        assert row["orders_placed"] == expected["orders_placed"]
        assert row["new_patients"] == expected["new_patients"]
        if expected["payments_count"]:
            assert row["average_order_value_cents"] == round(
                Decimal(expected["gross_cents"]) / expected["payments_count"]
            )
    assert sum(r["net_cents"] for r in mart.values()) == 15000 - 3500


def test_orders_fact_holds_each_orders_life_and_money_but_no_patient(
    built: tuple[TestDatabase, History],
) -> None:
    database, history = built
    facts = {
        r["order_id"]: r for r in rows(database.owner_url, "SELECT * FROM analytics.fct_orders")
    }
    o = history.orders
    assert len(facts) == 6
    o1 = facts[o["o1"]]
    assert (o1["order_status"], o1["units"], o1["items_count"], o1["total_cents"]) == (
        "fulfilled",
        3,
        2,
        2 * X_PRICE + 2500,
    )
    assert (o1["paid_cents"], o1["net_paid_cents"], o1["payment_method"]) == (4500, 4500, "card")
    assert o1["hours_created_to_fulfilled"] == 24
    o3 = facts[o["o3"]]
    assert (o3["refunded_cents"], o3["net_paid_cents"], o3["cancellation_code"]) == (
        2500,
        0,
        "refunded_at_stripe",
    )
    assert facts[o["o4"]]["is_self_order"] is True
    assert facts[o["o4"]]["paid_cents"] == 0
    assert facts[o["o5"]]["cancellation_code"] == "payment_expired"
    assert not {"patient_id", "note_encrypted", "cancellation_note_encrypted"} & set(o1)


def test_inventory_velocity_and_days_of_cover(built: tuple[TestDatabase, History]) -> None:
    database, history = built
    velocity = {
        r["product_id"]: r
        for r in rows(database.owner_url, "SELECT * FROM analytics.fct_inventory_velocity")
    }
    x, y = velocity[history.product_x], velocity[history.product_y]
    # X: 5 units paid yesterday, 2 + 3 ten days ago. Sellable: lot x1 98 on hand - 9 reserved,
    # lot x2 20; the expired lot x3 holds nothing.
    assert (x["units_sold_7d"], x["units_sold_30d"], x["units_sold_90d"]) == (5, 10, 10)
    assert x["sellable_units"] == 89 + 20
    assert x["days_of_cover_30d"] == Decimal("327.0")
    assert x["units_per_day_7d"] == Decimal("0.714")
    # Y: 1 unit ten days ago (the cancelled order's unit does not count); the quarantined lot
    # is not sellable.
    assert (y["units_sold_7d"], y["units_sold_30d"]) == (0, 1)
    assert y["sellable_units"] == 30
    assert y["days_of_cover_30d"] == Decimal("900.0")
    assert y["days_of_cover_7d"] is None
    assert x["as_of_date"] == history.today


def test_fulfilment_times_have_percentiles_per_day_and_month(
    built: tuple[TestDatabase, History],
) -> None:
    database, history = built
    by_key = {
        (r["period"], r["period_start"]): r
        for r in rows(database.owner_url, "SELECT * FROM analytics.fct_fulfilment_times")
    }
    paid_day = by_key[("day", history.day(10))]  # o1 paid in 2 hours, o2 in 4
    assert paid_day["orders_paid"] == 2
    assert (paid_day["p50_hours_to_pay"], paid_day["p90_hours_to_pay"]) == (3.0, 3.8)
    fulfilled_day = by_key[("day", history.day(9))]
    assert fulfilled_day["orders_fulfilled"] == 1
    assert fulfilled_day["p50_hours_paid_to_fulfilled"] == 22.0
    assert fulfilled_day["p99_hours_created_to_fulfilled"] == 24.0
    months = [r for r in by_key.values() if r["period"] == "month"]
    assert sum(r["orders_paid"] for r in months) == 4
    assert sum(r["orders_fulfilled"] for r in months) == 1


def test_lot_expiry_values_stock_by_week_of_expiry(built: tuple[TestDatabase, History]) -> None:
    database, history = built
    expiry = {
        (r["expiry_week"], r["product_id"]): (r["units_on_hand"], r["value_cents"], r["is_past"])
        for r in rows(database.owner_url, "SELECT * FROM analytics.fct_lot_expiry")
    }

    def week(days: int) -> date:
        day = history.today + timedelta(days=days)
        return day - timedelta(days=day.weekday())

    assert expiry == {
        (week(60), history.product_x): (98, 98 * X_PRICE, False),
        (week(10), history.product_x): (20, 20 * X_PRICE, False),
        (week(20), history.product_y): (8, 8 * 2500, False),  # quarantined: still at risk
        (week(200), history.product_y): (30, 30 * 2500, False),
    }


def test_no_mart_holds_a_phi_column_or_value(built: tuple[TestDatabase, History]) -> None:
    database, _ = built
    columns = rows(
        database.owner_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'analytics'",
    )
    names = {c["column_name"] for c in columns}
    assert not names & {"patient_id", "email", "phone", "name", "full_name", "note_encrypted"}
    leaks = []
    for column in columns:
        if column["data_type"] in ("text", "character varying"):
            table, name = column["table_name"], column["column_name"]
            leaks += rows(
                database.owner_url,
                f"SELECT '{table}.{name}' AS place FROM analytics.{table}"
                f" WHERE {name} ~* '(@|555|jane|doe|analytics@|1980)'",
            )
    assert leaks == []


def test_the_analyst_role_reads_marts_and_nothing_else(built: tuple[TestDatabase, History]) -> None:
    database, _ = built
    analyst = with_user(database.owner_url, get_settings().database_analyst_role)
    # A table the owner creates there later (dbt replaces a mart on every full build) is
    # readable without a grant of its own: the schema's default privileges.
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE analytics.fct_later AS SELECT 1 AS x")
    with psycopg.connect(analyst, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM analytics.fct_later").fetchall() == [(1,)]
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("DROP TABLE analytics.fct_later")
    with psycopg.connect(analyst, autocommit=True) as conn:
        for mart in sorted(MARTS):
            conn.execute(f"SELECT count(*) FROM analytics.{mart}")
        for refused in (
            "patients",
            "orders",
            "order_items",
            "payments",
            "audit_log",
            "users",
            "analytics_staging.stg_portal__orders",
            "analytics_staging.stg_portal__patients",
            "analytics_intermediate.int_refund_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {refused} LIMIT 1")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM analytics.fct_orders")
        conn.execute("SET default_transaction_read_only = off")  # still no right to write
        for write in (
            "DELETE FROM analytics.fct_orders",
            "CREATE TABLE analytics.mine (x int)",
            "CREATE TABLE public.mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(write)


def test_an_incremental_run_picks_up_late_changes_without_rebuilding(
    built: tuple[TestDatabase, History], work: Path
) -> None:
    database, history = built
    url = database.owner_url
    oid_before = rows(url, "SELECT 'analytics.fct_orders'::regclass::oid AS oid")[0]["oid"]
    newest = rows(url, "SELECT max(source_updated_at) AS t FROM analytics.fct_orders")[0]["t"]
    o, p = history.orders, history.payments
    with psycopg.connect(url) as conn:
        # o2 fulfilled by a transaction that committed late: its updated_at is five minutes
        # older than the newest row already built (within the margin, `lookback_minutes`).
        late = newest - timedelta(minutes=5)
        conn.execute(
            "UPDATE orders SET status = 'fulfilled', fulfilled_at = %s, updated_at = %s"
            " WHERE id = %s",
            (late, late, o["o2"]),
        )
        # o6 refunded in part today (only the payment changes).
        conn.execute(
            "UPDATE payments SET refunded_cents = 500, updated_at = now() WHERE id = %s",
            (p["o6"],),
        )
        conn.execute(
            "INSERT INTO payment_refunds (stripe_refund_id, payment_id, amount_cents, currency,"
            " status, created_at) VALUES ('re_analytics_o6', %s, 500, 'usd', 'succeeded', now())",
            (p["o6"],),
        )
    result = run_dbt_for(database, work, "build", as_of=history.today)
    assert result.returncode == 0, dbt_output(result)

    assert rows(url, "SELECT 'analytics.fct_orders'::regclass::oid AS oid")[0]["oid"] == oid_before
    facts = {r["order_id"]: r for r in rows(url, "SELECT * FROM analytics.fct_orders")}
    assert facts[o["o2"]]["order_status"] == "fulfilled"
    assert (facts[o["o6"]]["refunded_cents"], facts[o["o6"]]["net_paid_cents"]) == (500, 4500)
    items = rows(
        url, "SELECT order_status FROM analytics.fct_order_items WHERE order_id = %s", o["o2"]
    )
    assert [i["order_status"] for i in items] == ["fulfilled"]
    refunds_today = rows(
        url,
        "SELECT sum(refunds_cents) AS cents FROM analytics.fct_revenue_daily"
        " WHERE revenue_date = (now() AT TIME ZONE 'UTC')::date",
    )
    assert refunds_today[0]["cents"] == 500


INCREMENTAL_AGGREGATES = (
    "fct_fulfilment_times",
    "fct_orders_daily",
    "fct_monthly_metrics",
    "fct_revenue_daily",
)


def test_the_incremental_aggregates_equal_a_full_refresh_after_a_late_change(
    built: tuple[TestDatabase, History], work: Path
) -> None:
    """After the late changes above (an order fulfilled late, a refund today) and one more,
    the periods the incremental run computed again and the ones it kept are exactly what a
    rebuild from scratch gives."""
    database, history = built
    url = database.owner_url
    o = history.orders
    newest = rows(url, "SELECT max(source_updated_at) AS t FROM analytics.fct_orders")[0]["t"]
    kept = rows(url, "SELECT * FROM analytics.fct_fulfilment_times WHERE period = 'day'")
    with psycopg.connect(url) as conn:
        # o1 cancelled late (after fulfilment; its old days stay, a new one is touched)
        late = newest - timedelta(minutes=3)
        conn.execute(
            "UPDATE orders SET status = 'cancelled', cancelled_at = %s, updated_at = %s,"
            " cancellation_code = 'other' WHERE id = %s",
            (late, late, o["o1"]),
        )
    result = run_dbt_for(database, work, "run", as_of=history.today)
    assert result.returncode == 0, dbt_output(result)
    incremental = {
        mart: _sorted_rows(url, f"SELECT * FROM analytics.{mart}")
        for mart in INCREMENTAL_AGGREGATES
    }
    o1 = rows(url, "SELECT * FROM analytics.fct_orders WHERE order_id = %s", o["o1"])[0]
    assert o1["cancelled_date"] == late.astimezone(UTC).date()
    touched = {f"day:{o1['paid_date']}", f"day:{o1['fulfilled_date']}"}
    day_rows = {
        r["period_key"]: r for r in incremental["fct_fulfilment_times"] if r["period"] == "day"
    }
    # the days o1 was paid and fulfilled on were computed again; the other days were kept
    assert {day_rows[key]["source_updated_at"] for key in touched} == {late}
    assert all(day_rows[r["period_key"]] == r for r in kept if r["period_key"] not in touched)
    assert day_rows.keys() == {r["period_key"] for r in kept}

    result = run_dbt_for(
        database,
        work,
        "run",
        "--full-refresh",
        "--select",
        " ".join(INCREMENTAL_AGGREGATES),
        as_of=history.today,
    )
    assert result.returncode == 0, dbt_output(result)
    for mart in INCREMENTAL_AGGREGATES:
        assert incremental[mart] == _sorted_rows(url, f"SELECT * FROM analytics.{mart}"), mart


def _sorted_rows(url: str, sql: str) -> list[dict[str, Any]]:
    return sorted(rows(url, sql), key=repr)


def test_the_projects_tests_fail_on_data_changed_behind_its_back(
    built: tuple[TestDatabase, History], work: Path
) -> None:
    database, history = built
    # An order's total changed without its updated_at: the incremental facts cannot see it,
    # and the invariant comparing them with the source says so.
    with psycopg.connect(database.owner_url) as conn:
        conn.execute(
            "UPDATE orders SET total_cents = total_cents + 1 WHERE id = %s", (history.orders["o1"],)
        )
    result = run_dbt_for(
        database,
        work,
        "test",
        "--select",
        "assert_facts_match_their_sources assert_order_items_sum_to_order_totals",
        as_of=history.today,
    )
    assert result.returncode == 1, dbt_output(result)
    assert "FAIL 1 assert_facts_match_their_sources" in result.stdout
    assert "PASS assert_order_items_sum_to_order_totals" in result.stdout


def test_docs_generate_works_offline_and_writes_the_manifest(
    built: tuple[TestDatabase, History], work: Path
) -> None:
    database, history = built
    result = run_dbt_for(database, work, "docs", "generate", as_of=history.today)
    assert result.returncode == 0, dbt_output(result)
    catalog = json.loads((work / "target" / "catalog.json").read_text())
    manifest = json.loads((work / "target" / "manifest.json").read_text())
    assert "model.portal.fct_monthly_metrics" in catalog["nodes"]
    assert {f"model.portal.{mart}" for mart in MARTS} <= set(manifest["nodes"])
