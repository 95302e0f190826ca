"""The dbt project's files and `pipelines.dbt_project`, without running dbt: the accepted values
are the enums of app/models/status.py, nothing PHI is selected, and database URLs of every
shape become the profile's variables."""

from __future__ import annotations

import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.models.status import (
    CancellationReason,
    LotStatus,
    OrderStatus,
    PaymentStatus,
    RefundStatus,
    StaffRole,
)
from pipelines.dbt_project import (
    DBT_EXECUTABLE,
    DBT_PROFILES_DIR,
    DBT_PROJECT_DIR,
    dbt_environment,
)

MODELS = DBT_PROJECT_DIR / "models"
# (model, column) -> the enum whose values the column holds.
ENUM_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("stg_portal__orders", "order_status"): OrderStatus,
    ("stg_portal__orders", "cancellation_code"): CancellationReason,
    ("stg_portal__payments", "payment_status"): PaymentStatus,
    ("stg_portal__payment_refunds", "refund_status"): RefundStatus,
    ("stg_portal__lots", "lot_status"): LotStatus,
    ("stg_portal__users", "staff_role"): StaffRole,
    ("fct_orders", "order_status"): OrderStatus,
    ("fct_orders", "cancellation_code"): CancellationReason,
    ("fct_payments", "payment_status"): PaymentStatus,
}


def _accepted_values() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in MODELS.rglob("*.yml"):
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for model in document.get("models", []):
            for column in model.get("columns", []):
                for test in column.get("data_tests", []):
                    if isinstance(test, dict) and "accepted_values" in test:
                        values = test["accepted_values"]["arguments"]["values"]
                        found[(model["name"], column["name"])] = values
    return found


def test_accepted_values_are_the_enums_of_status_py() -> None:
    accepted = _accepted_values()
    for key, enum in ENUM_COLUMNS.items():
        assert key in accepted, f"{key} has no accepted_values test"
        assert sorted(accepted[key]) == sorted(member.value for member in enum), key


def test_staging_never_selects_a_phi_column() -> None:
    phi = re.compile(
        r"\b(\w*_encrypted|email\w*|full_name|oidc_subject|phone\w*|note|"
        r"date_of_birth\w*|description|status_reason|failure_reason)\b"
    )
    for path in sorted((MODELS / "staging").glob("*.sql")):
        sql = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        assert phi.findall(sql) == [], path.name


def test_the_project_stays_offline() -> None:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["flags"]["send_anonymous_usage_stats"] is False
    assert not (DBT_PROJECT_DIR / "packages.yml").exists()
    assert not (DBT_PROJECT_DIR / "dependencies.yml").exists()
    assert DBT_PROFILES_DIR == DBT_PROJECT_DIR
    assert Path(sys.executable).parent / "dbt" == DBT_EXECUTABLE
    assert DBT_EXECUTABLE.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://owner:s%40cret@db.internal:6543/portal?sslmode=require",
            ("db.internal", "6543", "owner", "s@cret", "portal", "require"),
        ),
        (
            "postgresql+psycopg://postgres@/portal?host=/run/portal/pg",
            ("/run/portal/pg", "5432", "postgres", "", "portal", "prefer"),
        ),
        (
            "postgresql://postgres:@/portal_test?host=/srv/pg-socket&port=5433",
            ("/srv/pg-socket", "5433", "postgres", "", "portal_test", "prefer"),
        ),
        (
            "postgres://u@127.0.0.1/d",
            ("127.0.0.1", "5432", "u", "", "d", "prefer"),
        ),
        (
            "postgresql+psycopg2://u:p@h:5432/d",
            ("h", "5432", "u", "p", "d", "prefer"),
        ),
    ],
)
def test_dbt_environment_reads_libpq_and_sqlalchemy_urls(
    url: str, expected: tuple[str, ...]
) -> None:
    environment = dbt_environment(url)
    keys = ("HOST", "PORT", "USER", "PASSWORD", "DBNAME", "SSLMODE")
    assert tuple(environment[f"PORTAL_DBT_{key}"] for key in keys) == expected
    assert environment["DO_NOT_TRACK"] == "1"
    assert environment["PORTAL_DBT_ANALYST_ROLE"] == "portal_analyst"


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/d", "postgresql://h/d", "postgresql://u@h/", "postgresql://u@h:port/d"],
)
def test_dbt_environment_refuses_what_is_not_a_postgres_url(url: str) -> None:
    with pytest.raises(ValueError, match="database URL"):
        dbt_environment(url)
