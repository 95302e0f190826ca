"""The great-expectations suites on a small history of the portal and its marts: each passes on
good data and fails, with a readable line, on data broken on purpose.

One database and one `dbt run` for the module; each breakage is undone before the next test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from app.config import get_settings
from app.db import with_user
from pipelines.quality import SUITES, validate
from tests.fixtures.analytics import History, database_with_history, dbt_output, run_dbt_for
from tests.fixtures.database import TestDatabase


@pytest.fixture(scope="module")
def history_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[tuple[TestDatabase, History]]:
    yield from database_with_history(pg_server, template_db, app_engine)


@pytest.fixture(scope="module")
def marts(
    history_db: tuple[TestDatabase, History], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, History]:
    database, history = history_db
    work = tmp_path_factory.mktemp("dbt")
    result = run_dbt_for(database, work, "run", as_of=history.today)
    assert result.returncode == 0, dbt_output(result)
    return database.owner_url, history


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def test_the_suites_are_raw_and_marts_suites() -> None:
    assert set(SUITES) == {
        "raw_inventory",
        "raw_payments",
        "raw_freshness",
        "marts_phi",
        "marts_keys",
        "marts_freshness",
    }
    assert all(suite.checks for suite in SUITES.values())


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_each_suite_passes_on_good_data(marts: tuple[str, History], suite: str) -> None:
    url, _ = marts
    outcome = validate(suite, url)
    assert outcome.success, outcome.failures
    assert outcome.failures == []
    assert outcome.statistics["failed_checks"] == 0
    assert outcome.statistics["evaluated_checks"] == len(SUITES[suite].checks)


def test_the_marts_suites_that_read_only_analytics_run_as_the_analyst_role(
    marts: tuple[str, History],
) -> None:
    url, _ = marts
    analyst = with_user(url, get_settings().database_analyst_role)
    for suite in ("marts_phi", "marts_keys"):
        outcome = validate(suite, analyst)
        assert outcome.success, outcome.failures
    # The freshness of the marts compares them with `public`, which the analyst cannot read.
    (failure,) = validate("marts_freshness", analyst).failures[:1]
    assert "could not be evaluated (" in failure
    assert "permission denied" in failure


def test_raw_inventory_fails_when_a_lot_counter_moves_behind_the_ledgers_back(
    marts: tuple[str, History],
) -> None:
    url, history = marts
    lot = history.lots["x2"]
    # The ledger is append-only: the counter is what can be changed behind its back.
    execute(url, f"UPDATE lots SET quantity_on_hand = quantity_on_hand + 1 WHERE id = '{lot}'")
    try:
        outcome = validate("raw_inventory", url)
    finally:
        execute(url, f"UPDATE lots SET quantity_on_hand = quantity_on_hand - 1 WHERE id = '{lot}'")
    assert not outcome.success
    assert outcome.failures == [
        f"raw_inventory: each lot's counters equal the sums of its ledger: 1 row(s) (e.g. id={lot})"
    ]
    assert outcome.statistics["failed_checks"] == 1


def test_raw_inventory_fails_on_an_available_lot_past_its_expiry(
    marts: tuple[str, History],
) -> None:
    url, history = marts
    # Fifteen days on, lot x2 (expiring in ten) is still `available`: nobody marked it expired.
    outcome = validate("raw_inventory", url, now=datetime.now(UTC) + timedelta(days=15))
    assert outcome.failures == [
        "raw_inventory: no available lot past its expiry date: 1 row(s)"
        f" (e.g. id={history.lots['x2']})"
    ]


def test_raw_payments_fails_when_a_succeeded_payment_is_not_its_orders_total(
    marts: tuple[str, History],
) -> None:
    url, history = marts
    payment = history.payments["o1"]
    execute(url, f"UPDATE payments SET amount_cents = 4400 WHERE id = '{payment}'")
    try:
        outcome = validate("raw_payments", url)
    finally:
        execute(url, f"UPDATE payments SET amount_cents = 4500 WHERE id = '{payment}'")
    assert outcome.failures == [
        f"raw_payments: succeeded payments equal their order's total: 1 row(s) (e.g. id={payment})"
    ]


def test_raw_freshness_fails_when_no_order_is_recent(marts: tuple[str, History]) -> None:
    url, _ = marts
    outcome = validate("raw_freshness", url, now=datetime.now(UTC) + timedelta(days=30))
    assert not outcome.success
    assert outcome.failures[0].startswith("raw_freshness: the newest order is recent: 1 row(s)")


def test_marts_phi_fails_on_a_phi_column_and_on_phi_shaped_values(
    marts: tuple[str, History],
) -> None:
    url, history = marts
    planted = "+1 (555) 010-2030, jane.doe@example.com"
    execute(
        url,
        "ALTER TABLE analytics.fct_orders ADD COLUMN patient_email text",
        f"UPDATE analytics.dim_products SET product_name = '{planted}'"
        f" WHERE product_id = '{history.product_y}'",
        "UPDATE analytics.fct_orders SET cancellation_code = 'call 555.010.2030'"
        " WHERE cancellation_code = 'payment_expired'",
    )
    try:
        outcome = validate("marts_phi", url)
    finally:
        execute(
            url,
            "ALTER TABLE analytics.fct_orders DROP COLUMN patient_email",
            "UPDATE analytics.dim_products SET product_name = 'Analytics vaccine 1 ml'"
            f" WHERE product_id = '{history.product_y}'",
            "UPDATE analytics.fct_orders SET cancellation_code = 'payment_expired'"
            " WHERE cancellation_code = 'call 555.010.2030'",
        )
    column, values = outcome.failures
    assert column == (
        "marts_phi: no column named like PHI (name, e-mail, phone, birth date, address, note):"
        " 1 row(s) (e.g. table_name=fct_orders, column_name=patient_email)"
    )
    assert values.startswith("marts_phi: no e-mail- or phone-shaped value in a mart: 2 row(s)")
    assert "column_name=product_name" in values
    assert "column_name=cancellation_code" in values
    assert "555" not in values and "example.com" not in values  # the place, never the value
    assert validate("marts_phi", url).success


def test_marts_keys_fail_on_a_duplicated_key(marts: tuple[str, History]) -> None:
    url, _ = marts
    execute(url, "INSERT INTO analytics.dim_date SELECT * FROM analytics.dim_date LIMIT 1")
    try:
        outcome = validate("marts_keys", url)
    finally:
        execute(
            url,
            "DELETE FROM analytics.dim_date WHERE ctid IN (SELECT max(ctid) FROM"
            " analytics.dim_date GROUP BY date_day HAVING count(*) > 1)",
        )
    (failure,) = outcome.failures
    assert failure.startswith(
        "marts_keys: dim_date.date_day unique and not null: 1 row(s) (e.g. date_day="
    )


def test_marts_freshness_fails_when_the_marts_fall_behind(marts: tuple[str, History]) -> None:
    url, _ = marts
    # The marts lose their last days (as if dbt had stopped running four days ago).
    execute(url, "DELETE FROM analytics.fct_orders WHERE created_at > now() - interval '4 days'")
    outcome = validate("marts_freshness", url)
    assert not outcome.success
    assert outcome.failures[0].startswith(
        "marts_freshness: fct_orders has the newest orders: 1 row(s)"
    )


def test_an_unknown_suite_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown quality suite"):
        validate("raw_everything", "postgresql://nobody@127.0.0.1/none")


def test_importing_the_suites_does_not_import_great_expectations() -> None:
    probe = "import sys, pipelines.quality; print('great_expectations' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "False"
