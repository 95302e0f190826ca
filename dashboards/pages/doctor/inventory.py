"""Doctor: what can be ordered now, and when it expires (read-only)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import session, ui

session.require_role("doctor")
api = session.api()

st.title("Inventory")
st.caption("Units you can order now, and the expiry dates of the lots they come from.")

search = st.text_input("Search by SKU or name", key="doctor_inventory.q", max_chars=100)
products = api.items("/products", at_most=500, q=search.strip() or None)
if not products:
    ui.empty_state("No product matches." if search else "The catalog is empty.")
    st.stop()

table = pd.DataFrame(
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
)
only_in_stock = st.toggle("Only what is in stock", value=False, key="doctor_inventory.in_stock")
if only_in_stock:
    table = table[table["Available"] > 0]
ui.data_table(table, "inventory", empty="Nothing is in stock.")

st.subheader("Expiry by lot")
names = {f"{p['name']} ({p['sku']})": p for p in products}
chosen = st.selectbox("Product", list(names), index=None, placeholder="Choose a product")
if chosen:
    product = names[chosen]
    lots = [
        lot
        for lot in api.items(f"/products/{product['id']}/lots", at_most=500)
        if lot["status"] == "available" and lot["quantity_available"] > 0
    ]
    expiry = pd.DataFrame(
        [
            {
                "Lot": lot["lot_number"],
                "Expires": ui.day(lot["expiration_date"]),
                "Available": lot["quantity_available"],
            }
            for lot in sorted(lots, key=lambda lot: lot["expiration_date"] or "9999-12-31")
        ]
    )
    ui.data_table(
        expiry, f"lots {product['sku']}", empty="No lot of this product can be ordered now."
    )
