"""Run a suite with great-expectations in process: an ephemeral context (nothing written to
disk), one SQL data source per validation, progress bars off.

great-expectations is imported on first use and once per process (the import alone takes
seconds and hundreds of MB); importing this module does not import it.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from types import ModuleType
from typing import Any

from app.config import get_settings
from app.db import sqlalchemy_url
from pipelines.quality.suites import SUITES, Check, ColumnBetween, NoRows, Suite, UniqueKey

SAMPLE_ROWS = 3
# The context is shared by the process: one validation at a time uses it.
_CONTEXT_LOCK = threading.Lock()


@dataclass(frozen=True)
class QualityOutcome:
    """A suite's verdict: `failures` holds one readable line per failed check (which check, how
    many rows, a few keys of them), `statistics` the counts (JSON-serialisable)."""

    success: bool
    failures: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)


@cache
def _gx() -> ModuleType:
    import great_expectations as gx

    return gx


@cache
def _context() -> Any:
    """One ephemeral context per process (it makes a temporary folder for its docs site once);
    each validation adds its data source, suites and definitions and removes them after."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = _gx().get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _interval(hours: float) -> str:
    return f"interval '{float(hours)} hours'"


def _query(check: NoRows, now: datetime) -> str:
    settings = get_settings()
    return (
        check.query.replace("{now}", f"timestamptz '{now.isoformat()}'")
        .replace("{orders_max_age}", _interval(settings.quality_orders_max_age_hours))
        .replace("{marts_max_lag}", _interval(settings.quality_marts_max_lag_hours))
    )


def _expectation(gx: ModuleType, check: Check, now: datetime) -> Any:
    meta = {"check": check.description}
    if isinstance(check, ColumnBetween):
        return gx.expectations.ExpectColumnValuesToBeBetween(
            column=check.column,
            min_value=check.min_value,
            max_value=check.max_value,
            meta=meta,
        )
    if isinstance(check, UniqueKey):
        # One grouping of the key: GE's own uniqueness expectation takes far longer on a
        # million rows. Rows are the duplicated (or missing) keys.
        query = "SELECT <key> FROM {batch} GROUP BY <key> HAVING count(*) > 1 OR <key> IS NULL"
        return gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=query.replace("<key>", check.column), meta=meta
        )
    return gx.expectations.UnexpectedRowsExpectation(
        unexpected_rows_query=_query(check, now), meta=meta
    )


def _failure(suite: Suite, check: Check, result: Any) -> str:
    """One line: the suite, the check, how many rows, a few of their keys (never values of a
    mart's text columns: the queries return keys and names only)."""
    details: dict[str, Any] = result.result or {}
    if details.get("observed_value", details.get("unexpected_count")) is None:
        return f"{suite.name}: {check.description}: could not be evaluated ({_error(result)})"
    if not isinstance(check, ColumnBetween):
        count = details.get("observed_value")
        rows = (details.get("details") or {}).get("unexpected_rows") or []
        sample = "; ".join(
            ", ".join(f"{key}={value}" for key, value in dict(row).items())
            for row in list(rows)[:SAMPLE_ROWS]
        )
        suffix = f" (e.g. {sample})" if sample else ""
        return f"{suite.name}: {check.description}: {count} row(s){suffix}"
    count = details.get("unexpected_count")
    return f"{suite.name}: {check.description}: {count} row(s) of {check.table}.{check.column}"


def _error(result: Any) -> str:
    """The first line of the database's error behind a check that could not run."""
    info = result.exception_info or {}
    found = [info] if "exception_message" in info else list(info.values())
    for entry in found:
        message = entry.get("exception_message") if isinstance(entry, dict) else None
        if message:
            return str(message).splitlines()[0][:300]
    return "no result"


def validate(suite: str, database_url: str, *, now: datetime | None = None) -> QualityOutcome:
    """Validate `suite` (a key of SUITES) against the database at `database_url` (a role that
    reads the suite's tables: `raw_*` the portal's, `marts_*` the schema `analytics`).

    `now` is the clock the time-based checks use (default: the current time).
    """
    definition = SUITES.get(suite)
    if definition is None:
        raise KeyError(f"unknown quality suite {suite!r}; known: {', '.join(sorted(SUITES))}")
    now = now or datetime.now(UTC)
    with _CONTEXT_LOCK:
        return _validate(definition, database_url, now)


def _validate(definition: Suite, database_url: str, now: datetime) -> QualityOutcome:
    suite = definition.name
    gx = _gx()
    context = _context()
    run = uuid.uuid4().hex[:12]
    failures: list[str] = []
    checks: dict[str, bool] = {}
    with warnings.catch_warnings():
        # GE's advice to use its Postgres source (which refuses socket URLs) and its
        # deprecation of `schema_name` are noise here.
        warnings.simplefilter("ignore")
        source = context.data_sources.add_sql(
            name=f"portal-{run}", connection_string=sqlalchemy_url(database_url)
        )
        names: list[str] = []
        try:
            batches: dict[str, Any] = {}
            for index, check in enumerate(definition.checks):
                batch = batches.get(check.table)
                if batch is None:
                    schema, _, table = check.table.rpartition(".")
                    asset = source.add_table_asset(
                        name=check.table, table_name=table, schema_name=schema or None
                    )
                    batch = batches[check.table] = asset.add_batch_definition_whole_table("all")
                name = f"{suite}-{run}-{index}"
                names.append(name)
                expectations = context.suites.add(gx.ExpectationSuite(name=name))
                expectations.add_expectation(_expectation(gx, check, now))
                validation = context.validation_definitions.add(
                    gx.ValidationDefinition(name=name, data=batch, suite=expectations)
                )
                result_format = "SUMMARY" if isinstance(check, ColumnBetween) else "COMPLETE"
                outcome = validation.run(result_format=result_format)
                checks[check.description] = bool(outcome.success)
                if not outcome.success:
                    failures += [_failure(definition, check, r) for r in outcome.results]
        finally:
            source.get_engine().dispose()
            for name in names:
                context.validation_definitions.delete(name)
                context.suites.delete(name)
            context.data_sources.delete(source.name)
    return QualityOutcome(
        success=not failures,
        failures=failures,
        statistics={
            "suite": suite,
            "evaluated_checks": len(checks),
            "failed_checks": sum(1 for passed in checks.values() if not passed),
            "checks": checks,
        },
    )
