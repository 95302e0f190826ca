"""Doctor: my orders with their status, payment state and pharmacy state; an order's detail
and timeline; cancel an order, change a pending order's quantities, re-send its payment link."""

from __future__ import annotations

import streamlit as st

from dashboards import orders_view, session, ui
from dashboards import patients as my

session.require_role("doctor")
api = session.api()

st.title("My orders")
orders_view.show_done("my_orders")

status_col, patient_col = st.columns(2)
status = status_col.selectbox("Status", ["all", *orders_view.STATUSES], key="my_orders.status")
patients = {p["id"]: p for p in my.my_patients(api)}
by_label = {my.label(p): p["id"] for p in patients.values()}
patient = patient_col.selectbox("Patient", ["all", *by_label], key="my_orders.patient")
orders = api.items(
    "/orders",
    at_most=500,
    status=None if status == "all" else status,
    patient_id=None if patient == "all" else by_label[patient],
)
table = orders_view.orders_frame(
    orders,
    lambda o: {
        "Patient": patients[o["patient_id"]]["name"] if o["patient_id"] in patients else "—"
    },
)
ui.data_table(
    table,
    "my orders",
    empty="No order matches these filters."
    if status != "all" or patient != "all"
    else ("You have no order yet: place one on the New order page."),
    key="my_orders.csv",
)
chosen = orders_view.choose_order(orders, "my_orders.chosen")
if chosen:
    orders_view.order_detail(api, chosen, key="my_orders", can_edit=True)
