"""Admin: every order and payment; an order's detail with its timeline; cancel with refund,
fulfil, re-send the payment link (each confirmed first)."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from dashboards import orders_view, session, ui

session.require_role("admin")
api = session.api()

st.title("Orders and payments")
orders_view.show_done("orders")
orders_tab, payments_tab = st.tabs(["Orders", "Payments"])

with orders_tab:
    status_col, reference_col, doctor_col = st.columns(3)
    status = status_col.selectbox("Status", ["all", *orders_view.STATUSES], key="orders.status")
    search = reference_col.text_input(
        "Reference (8 characters)", max_chars=8, key="orders.reference"
    ).strip()
    doctors = {
        u["email"] or u["full_name"] or u["id"]: u["id"]
        for u in api.items("/users", at_most=1000)
        if u["role"] == "doctor"
    }
    doctor = doctor_col.selectbox("Doctor", ["all", *sorted(doctors)], key="orders.doctor")
    if search and not re.fullmatch(r"[0-9A-Fa-f]{8}", search):
        st.warning("A reference has 8 characters (digits and the letters A-F), e.g. 3F2A9C1B.")
        search = ""
    names = {doctor_id: email for email, doctor_id in doctors.items()}
    orders = api.items(
        "/orders",
        at_most=500,
        status=None if status == "all" else status,
        reference=search or None,
        doctor_id=None if doctor == "all" else doctors[doctor],
    )
    table = orders_view.orders_frame(
        orders, lambda o: {"Doctor": names.get(o["doctor_id"] or "", "self-order")}
    )
    ui.data_table(
        table,
        "orders",
        empty="No order matches these filters." if orders == [] else "No order yet.",
        key="orders.csv",
    )
    if len(orders) == 500:
        st.caption("The newest 500 orders are shown: narrow the filters to find older ones.")
    chosen = orders_view.choose_order(orders, "orders.chosen")
    if chosen:
        orders_view.order_detail(api, chosen, key="orders", can_fulfil=True)

with payments_tab:
    flagged = st.toggle(
        "Only payments refunded at Stripe after their order shipped",
        key="orders.refunded_after_fulfilment",
    )
    payments = api.items(
        "/payments", at_most=500, refunded_after_fulfilment=True if flagged else None
    )
    ui.data_table(
        pd.DataFrame(
            [
                {
                    "Created": ui.when(p["created_at"]),
                    "Order": orders_view.reference(p["order_id"]),
                    "Status": orders_view.PAYMENT_WORDS.get(p["status"], p["status"]),
                    "Method": p["method"] or "—",
                    "Amount": ui.money(p["amount_cents"], p["currency"]),
                    "Refunded": ui.money(p["refunded_cents"], p["currency"]),
                    "Disputed": "yes" if p["disputed"] else "no",
                    "Refunded after shipping": "yes" if p["refunded_after_fulfilment"] else "no",
                    "Failure": p["failure_reason"] or "",
                    "Paid": ui.when(p["succeeded_at"]),
                }
                for p in payments
            ]
        ),
        "payments",
        empty="No payment matches." if flagged else "No payment yet.",
        key="payments.csv",
    )
