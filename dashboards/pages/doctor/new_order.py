"""Doctor: a new order for one of my patients. Products with what can be ordered now,
quantities (and directions for prescription items), submit; then copy the payment link or have
a new one e-mailed to the patient."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards import orders_view, session, ui
from dashboards import patients as my
from dashboards.api import ApiProblem

session.require_role("doctor")
api = session.api()

PLACED = "new_order.placed"

st.title("New order")

placed: dict[str, Any] | None = st.session_state.get(PLACED)
if placed:
    reference = orders_view.reference(placed["id"])
    st.success(
        f"Order {reference} is placed for {ui.money(placed['total_cents'], placed['currency'])}"
        " and its stock is reserved. The payment link below was e-mailed to the patient.",
        icon=":material/check_circle:",
    )
    st.write("Payment link (copy it with the button at its right):")
    st.code(placed["checkout_url"], language=None)
    st.caption(f"The patient can pay until {ui.when(placed['expires_at'])}.")
    if ui.confirm(
        "E-mail a new payment link",
        f"new_order.email.{placed['id']}",
        "The patient gets a new link by e-mail; the link shown above stops working.",
    ):
        try:
            issued = api.post(f"/orders/{placed['id']}/checkout-link")
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            st.session_state[PLACED] = {**placed, "checkout_url": issued["checkout_url"]}
            st.session_state["new_order.emailed"] = True
            st.rerun()
    if st.session_state.pop("new_order.emailed", False):
        st.info("A new payment link was e-mailed to the patient (the one above).")
    if st.button("Start another order", key="new_order.again", type="primary"):
        st.session_state.pop(PLACED, None)
        st.rerun()
    st.stop()

patients = my.my_patients(api)
if not patients:
    ui.empty_state("You have no patient yet: add one on the My patients page first.")
    st.stop()
by_label = {my.label(p): p for p in patients}
patient_label = st.selectbox(
    "Patient", list(by_label), index=None, placeholder="Choose a patient", key="new_order.patient"
)

products = [p for p in api.items("/products", at_most=1000) if p["active"]]
if not products:
    ui.empty_state("The catalog has no product to order.")
    st.stop()
st.subheader("Products")
st.caption("Availability is live: units in lots that can be sold now, minus reservations.")
ui.data_table(
    pd.DataFrame(
        [
            {
                "SKU": p["sku"],
                "Product": p["name"],
                "Available": p["quantity_available"],
                "Price": ui.money(p["price_cents"], p["currency"]),
                "Prescription": "yes" if p["requires_prescription"] else "no",
            }
            for p in products
        ]
    ),
    "products available",
    key="new_order.products_csv",
)
by_product = {f"{p['name']} ({p['sku']})": p for p in products}
chosen = st.multiselect(
    "Items", list(by_product), key="new_order.items", placeholder="Choose products"
)
lines: list[dict[str, Any]] = []
total = 0
for label in chosen:
    product = by_product[label]
    quantity_col, directions_col = st.columns([1, 3])
    available = int(product["quantity_available"])
    quantity = int(
        quantity_col.number_input(
            f"Quantity of {product['sku']}",
            min_value=1,
            max_value=max(available, 1),
            value=1,
            step=1,
            key=f"new_order.quantity.{product['id']}",
            help=f"{available} available now",
        )
    )
    line: dict[str, Any] = {"product_id": product["id"], "quantity": quantity}
    if product["requires_prescription"]:
        directions = directions_col.text_input(
            f"Directions for {product['sku']} (sent to the pharmacy)",
            max_chars=1000,
            key=f"new_order.directions.{product['id']}",
            placeholder="e.g. Take 1 capsule by mouth three times daily",
        ).strip()
        if directions:
            line["dosage_text"] = directions
    if available == 0:
        directions_col.warning(f"{product['sku']} is out of stock now.")
    lines.append(line)
    total += quantity * int(product["price_cents"])
note = st.text_area("Note (optional, kept encrypted)", max_chars=1000, key="new_order.note")
if lines:
    st.metric("Total", ui.money(total, products[0]["currency"]))
if st.button(
    "Place the order",
    type="primary",
    key="new_order.submit",
    disabled=not (patient_label and lines),
):
    body: dict[str, Any] = {"patient_id": by_label[str(patient_label)]["id"], "items": lines}
    if note.strip():
        body["note"] = note.strip()
    try:
        created = api.post("/orders", json=body)
    except ApiProblem as problem:
        ui.show_problem(problem)
    else:
        st.session_state[PLACED] = {
            key: created[key]
            for key in ("id", "total_cents", "currency", "checkout_url", "expires_at")
        }
        for product in products:  # a fresh form for the next order
            st.session_state.pop(f"new_order.quantity.{product['id']}", None)
            st.session_state.pop(f"new_order.directions.{product['id']}", None)
        for key in ("new_order.items", "new_order.note", "new_order.patient"):
            st.session_state.pop(key, None)
        st.rerun()
