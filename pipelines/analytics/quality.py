"""The great-expectations suites of pipelines/quality as Dagster asset checks.

Each suite checks tables; each (suite, table) becomes a check on that table's asset: the
portal's tables (`portal/<table>`, the dbt sources, declared here as external assets) and the
marts (`analytics/<mart>`, the dbt assets). One multi-asset check runs every suite (GE is
imported once per process) after the dbt build, and then syncs the `data_quality` alerts with
what failed: an alert opens when a check starts failing (its subscribers are told once), stays
quiet while it keeps failing, and clears when it passes again. Failures name rows by their keys
and counts only (the suites' queries return no PHI).
"""

import json
from collections.abc import Iterator

import dagster as dg

from app.alerts.flows import sync_alerts
from app.alerts.service import Condition
from app.models.status import AlertTopic
from pipelines.analytics.manifest import ensure_manifest
from pipelines.quality import SUITES, Suite, validate
from pipelines.resources import PortalDatabase

# The dbt project's source name for the portal's tables (dbt/models/staging/_portal__sources.yml).
SOURCE = "portal"
# Freshness can lag for harmless reasons (a quiet night); the others are broken invariants.
WARN_SUITES = frozenset({"raw_freshness", "marts_freshness"})
MAX_FAILURES_SHOWN = 20


def marts() -> list[dg.AssetKey]:
    """The dbt models in the schema `analytics` (the marts), from the manifest."""
    nodes = json.loads(ensure_manifest().read_text())["nodes"].values()
    return sorted(
        dg.AssetKey(["analytics", node["name"]])
        for node in nodes
        if node["resource_type"] == "model" and node["schema"] == "analytics"
    )


def asset_keys(table: str) -> list[dg.AssetKey]:
    """The assets a check on `table` is about: `public.lots` -> portal/lots (a dbt source),
    `analytics.fct_orders` -> analytics/fct_orders; a check over the catalog
    (`information_schema.*`, e.g. PHI in any mart) is about every mart."""
    schema, _, name = table.rpartition(".")
    if schema in ("", "public"):
        return [dg.AssetKey([SOURCE, name])]
    if schema == "information_schema":
        return marts()
    return [dg.AssetKey([schema, name])]


def tables_of(suite: Suite) -> dict[dg.AssetKey, list[str]]:
    """The suite's assets -> the descriptions of its checks on each."""
    checks: dict[dg.AssetKey, list[str]] = {}
    for check in suite.checks:
        for key in asset_keys(check.table):
            checks.setdefault(key, []).append(check.description)
    return checks


def severity(suite: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if suite in WARN_SUITES else dg.AssetCheckSeverity.ERROR


CHECK_SPECS = [
    dg.AssetCheckSpec(name=suite.name, asset=key, description=suite.description)
    for suite in SUITES.values()
    for key in tables_of(suite)
]

# The portal's tables the suites read, as external assets: the checks attach to them, and the
# lineage shows them feeding dbt's staging models. The API writes them, not Dagster.
SOURCE_TABLES = sorted(
    {spec.asset_key for spec in CHECK_SPECS if spec.asset_key.path[0] == SOURCE},
    key=lambda key: key.path[-1],
)
source_tables = [
    dg.AssetSpec(
        key,
        description=f"public.{key.path[-1]}: the portal's table, written by the API.",
        group_name="portal",
        kinds={"postgres"},
    )
    for key in SOURCE_TABLES
]


def _condition(suite: str, failed: list[str], failures: list[str]) -> Condition:
    return Condition(
        key=f"quality:{suite}",
        summary=f"data quality suite {suite}: {len(failed)} check(s) failed",
        details={"failed_checks": failed, "failures": failures[:MAX_FAILURES_SHOWN]},
    )


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    can_subset=False,
    description="The great-expectations suites on the portal's tables and on the marts.",
)
def data_quality_checks(
    context: dg.AssetCheckExecutionContext, database: PortalDatabase
) -> Iterator[dg.AssetCheckResult]:
    conditions: list[Condition] = []
    for suite in SUITES.values():
        try:
            outcome = validate(suite.name, database.owner)
            passed_checks: dict[str, bool] = dict(outcome.statistics.get("checks", {}))
            failures = list(outcome.failures)
        except Exception as exc:  # a suite that cannot run (a missing mart) fails every check
            context.log.warning(f"quality suite {suite.name} could not run: {exc}")
            passed_checks = {check.description: False for check in suite.checks}
            failures = [f"{suite.name}: could not run: {type(exc).__name__}"]
        failed_in_suite: list[str] = []
        for key, descriptions in tables_of(suite).items():
            failed = [d for d in descriptions if not passed_checks.get(d, False)]
            failed_in_suite += failed
            lines = [f for f in failures if any(f.startswith(f"{suite.name}: {d}") for d in failed)]
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=suite.name,
                passed=not failed,
                severity=severity(suite.name),
                metadata={
                    "checks": len(descriptions),
                    "failed_checks": dg.MetadataValue.json(failed),
                    "failures": dg.MetadataValue.md(
                        "\n".join(f"- {line}" for line in lines[:MAX_FAILURES_SHOWN]) or "none"
                    ),
                },
            )
        if failed_in_suite:
            conditions.append(_condition(suite.name, failed_in_suite, failures))
    sessions = database.sessions()
    with sessions() as session, session.begin():
        alerts = sync_alerts(session, AlertTopic.DATA_QUALITY, conditions)
    context.log.info(
        f"data quality alerts: {alerts.opened} opened, {alerts.cleared} cleared,"
        f" {alerts.still_open} still open"
    )


data_quality_job = dg.define_asset_job(
    "data_quality",
    selection=dg.AssetSelection.checks(data_quality_checks),
    description="The great-expectations suites alone (they also run after each dbt build).",
)

defs = dg.Definitions(
    assets=source_tables, asset_checks=[data_quality_checks], jobs=[data_quality_job]
)
