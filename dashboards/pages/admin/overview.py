"""Admin: the clinic at a glance. Orders and revenue over a chosen range, orders by status,
fulfilment times, inventory alerts, reconciliation exceptions and pipeline health.

Analytics come from the dbt marts (cached), exceptions from the API, pipeline health from
Dagster."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import marts, pipelines, session, ui

session.require_role("admin")
api = session.api()

st.title("Overview")

today = ui.today()
PRESETS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "Last 365 days": 365}
left, right = st.columns([1, 2])
preset = left.selectbox("Range", [*PRESETS, "Custom"], index=1, key="overview.preset")
if preset == "Custom":
    chosen = right.date_input(
        "From and to",
        value=(today - timedelta(days=29), today),
        max_value=today,
        key="overview.range",
    )
    if not isinstance(chosen, tuple) or len(chosen) != 2:
        st.info("Choose the last day of the range too.")
        st.stop()
    start, end = chosen
else:
    start, end = today - timedelta(days=PRESETS[preset] - 1), today
span = {"start": start, "end": end}
st.caption(
    f"{ui.day(start)} to {ui.day(end)}. Days are the marts' days (UTC); the marts are rebuilt"
    " by the scheduled dbt run."
)

# --- Orders and revenue ------------------------------------------------------------------
orders = marts.mart(marts.ORDERS_PER_DAY, span)
revenue = marts.mart(marts.REVENUE_PER_DAY, span)
if orders is not None and revenue is not None:
    gross = int(revenue["gross_cents"].sum()) if not revenue.empty else 0
    refunds = int(revenue["refunds_cents"].sum()) if not revenue.empty else 0
    placed = int(orders["orders_placed"].sum()) if not orders.empty else 0
    kpis = st.columns(4)
    kpis[0].metric("Orders placed", f"{placed:,}")
    kpis[1].metric("Gross revenue", ui.money(gross))
    kpis[2].metric("Refunds", ui.money(refunds))
    kpis[3].metric("Net revenue", ui.money(gross - refunds))

    st.subheader("Orders per day")
    if orders.empty:
        ui.empty_state("No order in this range.")
    else:
        chart = orders.rename(
            columns={
                "order_date": "Day",
                "orders_placed": "Placed",
                "orders_paid": "Paid",
                "orders_fulfilled": "Fulfilled",
                "orders_cancelled": "Cancelled",
            }
        )
        st.line_chart(chart, x="Day", y=["Placed", "Paid", "Fulfilled", "Cancelled"])
        with st.expander("Table"):
            table = chart.assign(**{"Value placed": orders["value_placed_cents"].map(ui.money)})
            ui.data_table(table.drop(columns=["value_placed_cents"]), "orders per day")

    st.subheader("Revenue per day")
    if revenue.empty:
        ui.empty_state("No payment or refund in this range.")
    else:
        dollars = pd.DataFrame(
            {
                "Day": revenue["revenue_date"],
                "Gross (USD)": revenue["gross_cents"] / 100,
                "Refunds (USD)": revenue["refunds_cents"] / 100,
                "Net (USD)": revenue["net_cents"] / 100,
            }
        )
        st.line_chart(dollars, x="Day", y=["Gross (USD)", "Refunds (USD)", "Net (USD)"])
        with st.expander("Table"):
            table = pd.DataFrame(
                {
                    "Day": revenue["revenue_date"],
                    "Gross": revenue["gross_cents"].map(ui.money),
                    "Refunds": revenue["refunds_cents"].map(ui.money),
                    "Net": revenue["net_cents"].map(ui.money),
                }
            )
            ui.data_table(table, "revenue per day")

# --- Status and fulfilment ---------------------------------------------------------------
status_column, fulfilment_column = st.columns(2)
with status_column:
    st.subheader("Orders by status")
    by_status = marts.mart(marts.ORDERS_BY_STATUS, span)
    if by_status is not None:
        table = pd.DataFrame(
            {
                "Status": by_status["order_status"],
                "Orders": by_status["orders"],
                "Value": by_status["total_cents"].map(ui.money),
            }
        )
        ui.data_table(table, "orders by status", empty="No order placed in this range.")

with fulfilment_column:
    st.subheader("Fulfilment times")
    percentiles = marts.mart(marts.FULFILMENT_PERCENTILES, span)
    if percentiles is not None:
        row = percentiles.iloc[0] if not percentiles.empty else None
        if row is None or not row["orders_fulfilled"]:
            ui.empty_state("No order was fulfilled in this range.")
        else:

            def hours(value: Any) -> str:
                return "—" if value is None or pd.isna(value) else f"{float(value):,.1f} h"

            table = pd.DataFrame(
                [
                    {
                        "Step": "Created to paid",
                        "p50": hours(row["p50_hours_to_pay"]),
                        "p90": hours(row["p90_hours_to_pay"]),
                        "p99": "—",
                    },
                    {
                        "Step": "Paid to fulfilled",
                        "p50": hours(row["p50_hours_paid_to_fulfilled"]),
                        "p90": hours(row["p90_hours_paid_to_fulfilled"]),
                        "p99": hours(row["p99_hours_paid_to_fulfilled"]),
                    },
                    {
                        "Step": "Created to fulfilled",
                        "p50": hours(row["p50_hours_created_to_fulfilled"]),
                        "p90": hours(row["p90_hours_created_to_fulfilled"]),
                        "p99": hours(row["p99_hours_created_to_fulfilled"]),
                    },
                ]
            )
            st.caption(f"Over the {int(row['orders_fulfilled']):,} orders fulfilled in range.")
            ui.data_table(table, "fulfilment percentiles")
            per_day = marts.mart(marts.FULFILMENT_PER_DAY, span)
            if per_day is not None and not per_day.empty:
                st.line_chart(
                    per_day.rename(
                        columns={
                            "fulfilled_date": "Day",
                            "p50_hours_created_to_fulfilled": "p50 hours",
                            "p90_hours_created_to_fulfilled": "p90 hours",
                        }
                    ),
                    x="Day",
                    y=["p50 hours", "p90 hours"],
                    height=220,
                )

# --- Inventory alerts --------------------------------------------------------------------
st.subheader("Inventory alerts")
low_tab, expiring_tab = st.tabs(["Low stock", "Expiring and expired"])
with low_tab:
    low = marts.mart(marts.LOW_STOCK)
    if low is not None:
        table = pd.DataFrame(
            {
                "SKU": low["sku"],
                "Product": low["product_name"],
                "Sellable": low["sellable_units"],
                "Par level": low["par_level"],
                "Reorder qty": low["reorder_quantity"],
                "Sold (30 d)": low["units_sold_30d"],
                "Days of cover": low["days_of_cover_30d"],
                "Next expiry": low["next_expiration_date"].map(ui.day),
            }
        )
        ui.data_table(
            table,
            "low stock",
            empty="No active product is at or under its par level.",
            column_config={
                "Days of cover": st.column_config.NumberColumn(
                    help="Sellable units at the pace of the last 30 days; empty: nothing sold",
                    format="%.1f",
                )
            },
        )
with expiring_tab:
    horizon = today + timedelta(days=30)
    expiring = marts.mart(marts.EXPIRING, {"horizon": horizon})
    if expiring is not None:
        table = pd.DataFrame(
            {
                "SKU": expiring["sku"],
                "Product": expiring["product_name"],
                "State": expiring["expired"].map(
                    lambda past: "expired, still on hand" if past else "expiring within 30 days"
                ),
                "First expiry week": expiring["first_expiry_week"].map(ui.day),
                "Lots": expiring["lots"],
                "Units on hand": expiring["units_on_hand"],
                "Value": expiring["value_cents"].map(ui.money),
            }
        )
        ui.data_table(table, "expiring stock", empty="Nothing on hand expires within 30 days.")

# --- Payments and pipelines --------------------------------------------------------------
st.subheader("Payment reconciliation exceptions")
exceptions = api.items("/payments/reconciliation/exceptions", at_most=200, state="open")
table = pd.DataFrame(
    [
        {
            "Kind": item["kind"].replace("_", " "),
            "Stripe object": item["stripe_object_id"],
            "Order": item["order_id"] or "—",
            "Portal amount": ui.money(item["expected_cents"], item["currency"] or "usd"),
            "Stripe amount": ui.money(item["actual_cents"], item["currency"] or "usd"),
            "First seen": ui.when(item["first_seen_at"]),
            "Last seen": ui.when(item["last_seen_at"]),
        }
        for item in exceptions
    ]
)
ui.data_table(table, "reconciliation exceptions", empty="No open exception: Stripe agrees.")

st.subheader("Pipeline health")
health = pipelines.health()
if health is not None:
    runs, failed_checks = health
    failed_runs = runs[runs["status"] == "failure"] if not runs.empty else runs
    counts = st.columns(2)
    counts[0].metric("Failed runs (last 25)", len(failed_runs))
    counts[1].metric("Failed checks", len(failed_checks))
    st.markdown("**Failed checks**")
    ui.data_table(
        ui.local_columns(failed_checks, ["when"]),
        "failed checks",
        empty="Every asset check passed on its latest run.",
    )
    st.markdown("**Last runs**")
    ui.data_table(
        ui.local_columns(runs, ["started", "ended"]), "pipeline runs", empty="No run yet."
    )
