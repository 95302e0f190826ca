"""Admin: stock by product and lot. Receive a lot, adjust a quantity with a reason,
quarantine, release or recall a lot, set par levels and reorder quantities. Every change goes
through the API (its rules, its ledger, its audit)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import session, ui
from dashboards.api import ApiProblem

session.require_role("admin")
api = session.api()

st.title("Inventory")

ADJUSTMENT_REASONS = {
    "count_correction": "Count correction (up or down)",
    "damaged": "Damaged (removes stock)",
    "expired": "Expired (removes stock)",
    "returned": "Returned (adds stock)",
    "other": "Other (a note is required)",
}
STATUS_ACTIONS = {
    "quarantined": "Quarantine (hold: not sold until released)",
    "available": "Release from quarantine",
    "recalled": "Recall (final)",
    "expired": "Mark expired (final)",
}
FINAL_STATES = {"recalled", "expired"}


def flash(message: str) -> None:
    """A success message shown after the rerun that refreshes the tables."""
    st.session_state["inventory.flash"] = message
    st.rerun()


if message := st.session_state.pop("inventory.flash", None):
    st.success(message, icon=":material/check_circle:")

# --- Products ----------------------------------------------------------------------------
filters = st.columns([2, 1, 1])
search = filters[0].text_input("Search products (SKU or name)", max_chars=100, key="inv.q")
state = filters[1].selectbox("State", ["Active", "Archived", "All"], key="inv.state")
under_par = filters[2].toggle("At or under par only", key="inv.under_par")
active = {"Active": True, "Archived": False, "All": None}[state]
products: list[dict[str, Any]] = api.items(
    "/products", at_most=1000, q=search.strip() or None, active=active
)
products_table = pd.DataFrame(
    [
        {
            "SKU": p["sku"],
            "Product": p["name"],
            "Available": p["quantity_available"],
            "Par level": p["par_level"],
            "Reorder qty": p["reorder_quantity"],
            "Perishable": p["perishable"],
            "Active": p["active"],
        }
        for p in products
    ]
)
if under_par and not products_table.empty:
    products_table = products_table[products_table["Available"] <= products_table["Par level"]]
st.subheader("Products")
ui.data_table(products_table, "products stock", empty="No product matches these filters.")

low = api.items("/inventory/low-stock", at_most=500, expiring_within_days=30)
with st.expander(f"Reorder suggestions ({len(low)})", expanded=bool(low)):
    ui.data_table(
        pd.DataFrame(
            [
                {
                    "SKU": item["sku"],
                    "Product": item["name"],
                    "Sellable": item["quantity_sellable"],
                    "Par level": item["par_level"],
                    "Expiring in 30 d": item["quantity_expiring_soon"],
                    "Next expiry": ui.day(item["next_expiration_date"]),
                    "Suggested order": item["suggested_order_quantity"],
                }
                for item in low
            ]
        ),
        "reorder suggestions",
        empty="Every active product is above its par level.",
    )

if not products:
    st.stop()

# --- Lots of one product -----------------------------------------------------------------
st.subheader("Lots")
labels = {f"{p['name']} ({p['sku']})": p for p in products}
chosen = st.selectbox("Product", list(labels), key="inv.product")
product = labels[chosen]
lot_filters = st.columns(2)
statuses = lot_filters[0].multiselect(
    "Lot status",
    ["available", "quarantined", "recalled", "expired"],
    default=["available", "quarantined"],
    key="inv.lot_status",
)
within = lot_filters[1].number_input(
    "Expiring within (days, 0: any)", min_value=0, max_value=3650, value=0, key="inv.within"
)
lots: list[dict[str, Any]] = api.items(f"/products/{product['id']}/lots", at_most=1000)
horizon = ui.today() + timedelta(days=int(within))
shown = [
    lot
    for lot in lots
    if lot["status"] in statuses
    and (
        not within
        or (lot["expiration_date"] and date.fromisoformat(lot["expiration_date"]) <= horizon)
    )
]
ui.data_table(
    pd.DataFrame(
        [
            {
                "Lot": lot["lot_number"],
                "Status": lot["status"],
                "Expires": ui.day(lot["expiration_date"]),
                "On hand": lot["quantity_on_hand"],
                "Reserved": lot["quantity_reserved"],
                "Available": lot["quantity_available"],
                "Status reason": lot["status_reason"] or "",
                "Received": ui.when(lot["created_at"]),
            }
            for lot in sorted(shown, key=lambda lot: lot["expiration_date"] or "9999-12-31")
        ]
    ),
    f"lots {product['sku']}",
    empty="No lot of this product matches these filters.",
)

# --- Work on stock -----------------------------------------------------------------------
receive_tab, adjust_tab, status_tab, par_tab = st.tabs(
    ["Receive a lot", "Adjust a quantity", "Quarantine or recall", "Par level"]
)

with receive_tab, st.form("inv.receive", clear_on_submit=False):
    st.caption(f"Into **{product['name']}** ({product['sku']})")
    lot_number = st.text_input("Lot number", max_chars=64, key="inv.receive.lot")
    no_expiry = st.checkbox(
        "No expiry date", value=False, disabled=product["perishable"], key="inv.receive.noexp"
    )
    expires = st.date_input(
        "Expiry date",
        value=ui.today() + timedelta(days=365),
        min_value=ui.today() + timedelta(days=1),
        key="inv.receive.exp",
    )
    quantity = st.number_input(
        "Quantity", min_value=1, max_value=1_000_000, value=1, step=1, key="inv.receive.qty"
    )
    if st.form_submit_button("Receive lot", type="primary"):
        if not lot_number.strip():
            st.error("Enter the lot number printed on the package.")
        else:
            try:
                received = api.post(
                    f"/products/{product['id']}/lots",
                    json={
                        "lot_number": lot_number.strip(),
                        "quantity": int(quantity),
                        "expiration_date": None if no_expiry else expires.isoformat(),
                    },
                )
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                flash(
                    f"Received lot {received['lot_number']}: {received['quantity_on_hand']} units"
                    f" of {product['name']}."
                )

open_lots = {
    f"{lot['lot_number']} · {lot['status']} · {lot['quantity_on_hand']} on hand": lot
    for lot in lots
    if lot["status"] not in FINAL_STATES
}

with adjust_tab:
    if not open_lots:
        ui.empty_state("This product has no lot that can be adjusted.")
    else:
        with st.form("inv.adjust"):
            lot_label = st.selectbox("Lot", list(open_lots), key="inv.adjust.lot")
            delta = st.number_input(
                "Change in units (negative removes)",
                min_value=-1_000_000,
                max_value=1_000_000,
                value=-1,
                step=1,
                key="inv.adjust.delta",
            )
            reason = st.selectbox(
                "Reason",
                list(ADJUSTMENT_REASONS),
                format_func=ADJUSTMENT_REASONS.__getitem__,
                key="inv.adjust.reason",
            )
            note = st.text_input("Note", max_chars=500, key="inv.adjust.note")
            if st.form_submit_button("Record adjustment", type="primary"):
                lot = open_lots[lot_label]
                body: dict[str, Any] = {"delta": int(delta), "reason": reason}
                if note.strip():
                    body["note"] = note.strip()
                if delta == 0:
                    st.error("A change of 0 units changes nothing.")
                else:
                    try:
                        api.post(f"/lots/{lot['id']}/adjustments", json=body)
                    except ApiProblem as problem:
                        ui.show_problem(problem)
                    else:
                        flash(f"Lot {lot['lot_number']}: {int(delta):+d} units ({reason}).")

with status_tab:
    if not open_lots:
        ui.empty_state("This product has no lot whose status can change.")
    else:
        lot_label = st.selectbox("Lot", list(open_lots), key="inv.status.lot")
        lot = open_lots[lot_label]
        target = st.selectbox(
            "Action",
            [s for s in STATUS_ACTIONS if s != lot["status"]],
            format_func=STATUS_ACTIONS.__getitem__,
            key="inv.status.target",
        )
        status_reason = st.text_input(
            "Reason (kept with the lot)", max_chars=500, key="inv.status.reason"
        )
        label = STATUS_ACTIONS[target].split(" (")[0]
        warning = f"{label} lot {lot['lot_number']}: {lot['quantity_on_hand']} units" + (
            " can never be sold again. This cannot be undone."
            if target in FINAL_STATES
            else " will not be sold until released."
            if target == "quarantined"
            else " become sellable again."
        )
        if ui.confirm(
            label,
            key=f"inv.status.go.{lot['id']}.{target}",
            warning=warning,
            disabled=not status_reason.strip(),
        ):
            try:
                api.post(
                    f"/lots/{lot['id']}/status",
                    json={"status": target, "reason": status_reason.strip()},
                )
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                flash(f"Lot {lot['lot_number']} is now {target}.")
        if not status_reason.strip():
            st.caption("Enter a reason first.")

with par_tab, st.form("inv.par"):
    st.caption(
        "When sellable stock falls to the par level, the product shows in the reorder"
        " suggestions and a stock alert is sent; the suggested order is rounded up to the"
        " reorder quantity."
    )
    par_level = st.number_input(
        "Par level",
        min_value=0,
        max_value=1_000_000,
        value=product["par_level"],
        step=1,
        key=f"inv.par.level.{product['id']}",
    )
    reorder = st.number_input(
        "Reorder quantity",
        min_value=0,
        max_value=1_000_000,
        value=product["reorder_quantity"],
        step=1,
        key=f"inv.par.reorder.{product['id']}",
    )
    if st.form_submit_button("Save par level", type="primary"):
        try:
            api.patch(
                f"/products/{product['id']}",
                json={"par_level": int(par_level), "reorder_quantity": int(reorder)},
            )
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            flash(
                f"{product['name']}: par level {int(par_level)}, reorder quantity {int(reorder)}."
            )
