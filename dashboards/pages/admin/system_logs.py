"""Admin: recent warnings and errors of the API, the worker and the pipelines (redacted when
written: no PHI), from the API's system log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboards import session, ui

session.require_role("admin")
api = session.api()

st.title("System logs")
st.caption("Warnings and errors, newest first. Patients' details are removed before any is kept.")

filters = st.columns(3)
level = filters[0].selectbox(
    "At least",
    ["WARNING", "ERROR", "CRITICAL"],
    key="logs.level",
    format_func=str.capitalize,
)
source = filters[1].selectbox(
    "From",
    ["All", "api", "worker", "pipelines", "command"],
    key="logs.source",
    format_func=lambda s: {"api": "API", "All": "All"}.get(s, s.capitalize()),
)
days = filters[2].selectbox(
    "Period",
    [1, 7, 30],
    index=1,
    key="logs.days",
    format_func=lambda d: "Last 24 hours" if d == 1 else f"Last {d} days",
)
since = datetime.now(UTC) - timedelta(days=days)

records = api.items(
    "/system-logs",
    at_most=500,
    level=level,
    source=None if source == "All" else source,
    since=since.isoformat(),
)
table = pd.DataFrame(
    [
        {
            "When": ui.when(r["created_at"]),
            "Level": r["level"],
            "From": r["source"],
            "Logger": r["logger"],
            "Message": r["message"],
        }
        for r in records
    ]
)
st.caption(f"{len(records)} records" + (" (the newest 500)" if len(records) == 500 else ""))
ui.data_table(table, "system logs", empty="No warning or error in this period.")

with_trace = [r for r in records if r["exception"]]
if with_trace:
    st.subheader("Tracebacks")
    labels = {
        f"{ui.when(r['created_at'])} · {r['logger']} · {r['message'][:80]}": r for r in with_trace
    }
    chosen = st.selectbox("Record", list(labels), key="logs.trace")
    st.code(labels[chosen]["exception"], language=None)
