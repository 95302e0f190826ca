"""Widgets every page shares, so the portal reads the same everywhere: money, dates in the
clinic's time zone, data tables with a CSV button, confirmations, problems and empty states."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, NoReturn

import pandas as pd
import streamlit as st

from dashboards.api import ApiProblem, SessionExpired
from dashboards.settings import get_ui_settings


def money(cents: int | float | None, currency: str = "usd") -> str:
    """Cents as currency: 123450 -> "$1,234.50", -999 -> "-$9.99"; None -> "—"."""
    if cents is None or pd.isna(cents):
        return "—"
    symbol = "$" if currency.lower() == "usd" else currency.upper() + " "
    sign = "-" if cents < 0 else ""
    return f"{sign}{symbol}{abs(cents) / 100:,.2f}"


def _aware(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # the API and the marts keep UTC
        moment = moment.replace(tzinfo=UTC)
    return moment


def local_time(value: datetime | str | None) -> datetime | None:
    """A timestamp in the clinic's time zone (naive timestamps are UTC)."""
    if value is None or value == "":
        return None
    return _aware(value).astimezone(get_ui_settings().zone)


def when(value: datetime | str | None) -> str:
    """A timestamp as the clinic reads it: "2026-12-01 14:05 EST"; None -> "—"."""
    moment = local_time(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M %Z")


def day(value: date | datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, datetime) or (isinstance(value, str) and "T" in value):
        moment = local_time(value)
        return "—" if moment is None else moment.strftime("%Y-%m-%d")
    return value.isoformat() if isinstance(value, date) else str(value)


def today() -> date:
    """Today in the clinic's time zone."""
    return datetime.now(get_ui_settings().zone).date()


def local_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """These timestamp columns converted to the clinic's time zone (for tables and CSV)."""
    zone = get_ui_settings().zone
    out = df.copy()
    for column in columns:
        if column in out:
            values = pd.to_datetime(out[column], utc=True, errors="coerce")
            out[column] = values.dt.tz_convert(zone)
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "table"


def _file_name(name: str) -> str:
    return f"{slug(name)}-{today().isoformat()}.csv"


def data_table(
    df: pd.DataFrame,
    name: str,
    *,
    empty: str = "Nothing to show.",
    column_config: dict[str, Any] | None = None,
    key: str | None = None,
    height: int | None = None,
) -> None:
    """A data table with a one-click CSV download of exactly what it shows."""
    if df.empty:
        empty_state(empty)
        return
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config=column_config,
        height=height if height is not None else "auto",
    )
    st.download_button(
        "Download CSV",
        df.to_csv(index=False).encode(),
        file_name=_file_name(name),
        mime="text/csv",
        # The element carries the CSS class `st-key-csv-<name>` (browser tests find it by it).
        key=key or f"csv-{slug(name)}",
        icon=":material/download:",
    )


def empty_state(text: str) -> None:
    st.info(text, icon=":material/inbox:")


def show_problem(problem: ApiProblem) -> None:
    """An API problem in plain words (its title and detail); an expired sign-in goes to the
    sign-in screen."""
    if isinstance(problem, SessionExpired):
        from dashboards.session import session_expired

        session_expired()
    text = f"**{problem.title}**"
    if problem.detail:
        text += f" — {problem.detail}"
    st.error(text, icon=":material/error:")


def stop_with_problem(problem: ApiProblem) -> NoReturn:
    show_problem(problem)
    st.stop()


def confirm(label: str, key: str, warning: str, *, disabled: bool = False) -> bool:
    """A destructive action in two clicks: `label`, then "Yes, ..." after reading `warning`.
    True exactly once, on the run of the second click."""
    asking = f"{key}.asking"
    if st.button(label, key=key, disabled=disabled):
        st.session_state[asking] = True
    if not st.session_state.get(asking):
        return False
    st.warning(warning, icon=":material/warning:")
    yes, no = st.columns(2)
    if yes.button(f"Yes, {label[:1].lower()}{label[1:]}", key=f"{key}.yes", type="primary"):
        st.session_state.pop(asking, None)
        return True
    if no.button("Cancel", key=f"{key}.cancel"):
        st.session_state.pop(asking, None)
        st.rerun()
    return False
