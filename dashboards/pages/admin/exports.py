"""Admin: the monthly metrics export (from the marts), as a table and a CSV file. Every other
table of the portal has its own **Download CSV** button."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboards import marts, session, ui

session.require_role("admin")

st.title("Exports")
st.caption(
    "Monthly metrics from the analytics marts: orders, units, revenue (gross, refunds, net),"
    " average order value, refund rate, new patients and ordering doctors. Counts only: no"
    " patient appears in any export. Months are UTC months."
)

this_month = ui.today().replace(day=1)
years = list(range(this_month.year, this_month.year - 6, -1))
pick = st.columns(2)
first_year = pick[0].selectbox(
    "From year", years, index=1 if len(years) > 1 else 0, key="exports.from"
)
last_year = pick[1].selectbox("To year", years, index=0, key="exports.to")
if first_year > last_year:
    st.error("The first year must not be after the last.")
    st.stop()
span = {"start": date(first_year, 1, 1), "end": date(last_year, 12, 31)}

metrics = marts.mart(marts.MONTHLY_METRICS, span)
if metrics is None:
    st.stop()
if metrics.empty:
    ui.empty_state("No month with data in these years.")
    st.stop()

shown = pd.DataFrame(
    {
        "Month": metrics["month"],
        "Orders placed": metrics["orders_placed"],
        "Paid": metrics["orders_paid"],
        "Fulfilled": metrics["orders_fulfilled"],
        "Cancelled": metrics["orders_cancelled"],
        "Units sold": metrics["units_sold"],
        "Gross": metrics["gross_cents"].map(ui.money),
        "Refunds": metrics["refunds_cents"].map(ui.money),
        "Net": metrics["net_cents"].map(ui.money),
        "Avg order": metrics["average_order_value_cents"].map(ui.money),
        "Refund rate": metrics["refund_rate"].map(
            lambda r: "—" if r is None or pd.isna(r) else f"{float(r):.1%}"
        ),
        "New patients": metrics["new_patients"],
        "Ordering doctors": metrics["ordering_doctors"],
    }
)
st.dataframe(shown, hide_index=True, width="stretch")

# The file keeps machine-readable values: cents and dollars as numbers, one row per month.
export = metrics.copy()
for column in ("gross", "refunds", "net", "average_order_value"):
    export[f"{column}_usd"] = (export[f"{column}_cents"].astype("float") / 100).round(2)
st.download_button(
    "Download monthly metrics (CSV)",
    export.to_csv(index=False).encode(),
    file_name=f"monthly-metrics-{first_year}-{last_year}.csv",
    mime="text/csv",
    type="primary",
    key="exports.monthly",
    icon=":material/download:",
)
