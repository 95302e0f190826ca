"""The dbt marts (`analytics.*`), read as the read-only analyst role (UI_ANALYTICS_DATABASE_URL).

Never the portal's own tables: the analyst role may read `analytics` and nothing else, and
every query here names only `analytics.` relations. Answers are cached for UI_CACHE_SECONDS
(`st.cache_data`), so a page opened again within that time does not query at all.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import psycopg
import streamlit as st

from dashboards.settings import get_ui_settings

# Every schema-qualified relation a mart query reads must be in `analytics` (the analyst
# role's grants are the real guarantee; this catches a mistake before it reaches the server).
_RELATION = re.compile(r"\b(?:from|join)\s+([a-z_]\w*\.[a-z_]\w*)", re.IGNORECASE)
STATEMENT_TIMEOUT_MS = 10_000


class MartsUnavailable(Exception):
    """No analytics database configured, or it cannot be read; the page says so plainly."""


def _check_relations(sql: str) -> None:
    for relation in _RELATION.findall(sql):
        if not relation.lower().startswith("analytics."):
            raise ValueError(f"mart queries read analytics.* only, not {relation}")


def _connect() -> psycopg.Connection[Any]:
    url = get_ui_settings().ui_analytics_database_url
    if not url:
        raise MartsUnavailable("Analytics are not configured (UI_ANALYTICS_DATABASE_URL is unset).")
    try:
        return psycopg.connect(
            url,
            connect_timeout=5,
            options=(
                f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
            ),
        )
    except psycopg.Error as exc:
        raise MartsUnavailable("The analytics database cannot be reached.") from exc


@st.cache_data(ttl=get_ui_settings().ui_cache_seconds, show_spinner=False)
def query(sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows of a query over `analytics.*` as a DataFrame (cached)."""
    _check_relations(sql)
    with _connect() as conn:
        try:
            cursor = conn.execute(sql, params)
        except psycopg.errors.UndefinedTable as exc:
            raise MartsUnavailable(
                "The marts are not built yet (the dbt run has not happened)."
            ) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MartsUnavailable("The analyst role may not read this mart.") from exc
        columns = [c.name for c in cursor.description or []]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def mart(sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> pd.DataFrame | None:
    """`query`, or None after telling the user why the numbers are missing."""
    try:
        return query(sql, params)
    except MartsUnavailable as exc:
        st.info(str(exc), icon=":material/database_off:")
        return None
