"""Pipeline health for the Overview: the last Dagster runs and the asset checks that failed,
from the Dagster webserver's GraphQL API (UI_DAGSTER_URL), read-only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from dashboards.settings import get_ui_settings

HEALTH_QUERY = """
query PortalPipelineHealth {
  runsOrError(limit: 25) {
    __typename
    ... on Runs { results { runId jobName status startTime endTime } }
    ... on PythonError { message }
  }
  assetNodes {
    assetKey { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          executionForLatestMaterialization {
            status
            timestamp
            evaluation { success description }
          }
        }
      }
    }
  }
}
"""
FAILED_CHECK_STATES = {"FAILED", "EXECUTION_FAILED"}


class PipelinesUnavailable(Exception):
    pass


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def parse_health(answer: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(last runs, failed checks) from the GraphQL answer."""
    if answer.get("errors"):
        raise PipelinesUnavailable("Dagster refused the query: " + str(answer["errors"][0]))
    data = answer.get("data") or {}
    runs_or_error = data.get("runsOrError") or {}
    if runs_or_error.get("__typename") != "Runs":
        raise PipelinesUnavailable(str(runs_or_error.get("message") or "no runs answer"))
    runs = pd.DataFrame(
        [
            {
                "job": run["jobName"],
                "status": str(run["status"]).lower(),
                "started": _moment(run.get("startTime")),
                "ended": _moment(run.get("endTime")),
                "run_id": run["runId"],
            }
            for run in runs_or_error.get("results", [])
        ],
        columns=["job", "status", "started", "ended", "run_id"],
    )
    failed = []
    for node in data.get("assetNodes") or []:
        checks = node.get("assetChecksOrError") or {}
        for check in checks.get("checks", []) if checks.get("__typename") == "AssetChecks" else []:
            execution = check.get("executionForLatestMaterialization") or {}
            evaluation = execution.get("evaluation") or {}
            if execution.get("status") in FAILED_CHECK_STATES or evaluation.get("success") is False:
                failed.append(
                    {
                        "asset": "/".join(node["assetKey"]["path"]),
                        "check": check["name"],
                        "status": str(execution.get("status", "")).lower(),
                        "when": _moment(execution.get("timestamp")),
                        "description": evaluation.get("description") or "",
                    }
                )
    return runs, pd.DataFrame(failed, columns=["asset", "check", "status", "when", "description"])


@st.cache_data(ttl=30, show_spinner=False)
def pipeline_health(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        response = httpx.post(
            url.rstrip("/") + "/graphql", json={"query": HEALTH_QUERY}, timeout=10
        )
        response.raise_for_status()
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PipelinesUnavailable(f"Dagster at {url} cannot be reached.") from exc
    return parse_health(answer)


def health() -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The health tables, or None after saying why they are missing."""
    url = get_ui_settings().ui_dagster_url
    if not url:
        st.info("Pipeline health is not configured (UI_DAGSTER_URL is unset).")
        return None
    try:
        return pipeline_health(url)
    except PipelinesUnavailable as exc:
        st.info(str(exc), icon=":material/cloud_off:")
        return None
