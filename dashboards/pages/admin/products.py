"""Admin: the catalog. Create a product, edit one, archive it (or delete one that never had
stock), restore an archived one. Every change goes through the API."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards import session, ui
from dashboards.api import ApiProblem

session.require_role("admin")
api = session.api()

st.title("Products")

if message := st.session_state.pop("products.flash", None):
    st.success(message, icon=":material/check_circle:")


def flash(message: str) -> None:
    st.session_state["products.flash"] = message
    st.rerun()


def dollars_to_cents(amount: float) -> int:
    return round(amount * 100)


filters = st.columns([2, 1])
search = filters[0].text_input("Search (SKU or name)", max_chars=100, key="products.q")
state = filters[1].selectbox("State", ["Active", "Archived", "All"], key="products.state")
products: list[dict[str, Any]] = api.items(
    "/products",
    at_most=1000,
    q=search.strip() or None,
    active={"Active": True, "Archived": False, "All": None}[state],
)
ui.data_table(
    pd.DataFrame(
        [
            {
                "SKU": p["sku"],
                "Name": p["name"],
                "Price": ui.money(p["price_cents"], p["currency"]),
                "Available": p["quantity_available"],
                "Par level": p["par_level"],
                "Reorder qty": p["reorder_quantity"],
                "Prescription": p["requires_prescription"],
                "Perishable": p["perishable"],
                "NDC": p["ndc_code"] or "",
                "RxNorm": p["rxnorm_code"] or "",
                "Active": p["active"],
                "Created": ui.when(p["created_at"]),
            }
            for p in products
        ]
    ),
    "products",
    empty="No product matches these filters.",
)

create_tab, edit_tab, archive_tab = st.tabs(["New product", "Edit", "Archive or restore"])

with create_tab, st.form("products.create"):
    sku = st.text_input("SKU", max_chars=64, key="products.new.sku")
    name = st.text_input("Name", max_chars=200, key="products.new.name")
    description = st.text_area("Description", max_chars=5000, key="products.new.description")
    price = st.number_input(
        "Price (USD)",
        min_value=0.01,
        max_value=1_000_000.0,
        value=10.0,
        step=0.01,
        format="%.2f",
        key="products.new.price",
    )
    levels = st.columns(2)
    par_level = levels[0].number_input(
        "Par level", min_value=0, max_value=1_000_000, value=0, key="products.new.par"
    )
    reorder = levels[1].number_input(
        "Reorder quantity", min_value=0, max_value=1_000_000, value=0, key="products.new.reorder"
    )
    flags = st.columns(2)
    prescription = flags[0].checkbox("Requires a prescription", key="products.new.rx")
    perishable = flags[1].checkbox("Perishable (lots need an expiry date)", key="products.new.per")
    codes = st.columns(2)
    ndc = codes[0].text_input("NDC (optional)", max_chars=13, key="products.new.ndc")
    rxnorm = codes[1].text_input("RxNorm RxCUI (optional)", max_chars=8, key="products.new.rxn")
    if st.form_submit_button("Create product", type="primary"):
        body: dict[str, Any] = {
            "sku": sku.strip(),
            "name": name.strip(),
            "description": description.strip(),
            "price_cents": dollars_to_cents(price),
            "par_level": int(par_level),
            "reorder_quantity": int(reorder),
            "requires_prescription": prescription,
            "perishable": perishable,
            "ndc_code": ndc.strip() or None,
            "rxnorm_code": rxnorm.strip() or None,
        }
        if not body["sku"] or not body["name"]:
            st.error("A product needs a SKU and a name.")
        else:
            try:
                created = api.post("/products", json=body)
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                flash(f"Created {created['name']} ({created['sku']}).")

if not products:
    st.stop()
labels = {f"{p['name']} ({p['sku']})": p for p in products}

with edit_tab:
    product = labels[st.selectbox("Product", list(labels), key="products.edit.pick")]
    pid = product["id"]
    with st.form(f"products.edit.{pid}"):
        sku = st.text_input("SKU", value=product["sku"], max_chars=64)
        name = st.text_input("Name", value=product["name"], max_chars=200)
        description = st.text_area("Description", value=product["description"], max_chars=5000)
        price = st.number_input(
            "Price (USD)",
            min_value=0.01,
            max_value=1_000_000.0,
            value=product["price_cents"] / 100,
            step=0.01,
            format="%.2f",
        )
        levels = st.columns(2)
        par_level = levels[0].number_input(
            "Par level", min_value=0, max_value=1_000_000, value=product["par_level"]
        )
        reorder = levels[1].number_input(
            "Reorder quantity", min_value=0, max_value=1_000_000, value=product["reorder_quantity"]
        )
        flags = st.columns(2)
        prescription = flags[0].checkbox(
            "Requires a prescription", value=product["requires_prescription"]
        )
        perishable = flags[1].checkbox("Perishable", value=product["perishable"])
        codes = st.columns(2)
        ndc = codes[0].text_input("NDC", value=product["ndc_code"] or "", max_chars=13)
        rxnorm = codes[1].text_input(
            "RxNorm RxCUI", value=product["rxnorm_code"] or "", max_chars=8
        )
        if st.form_submit_button("Save changes", type="primary"):
            wanted: dict[str, Any] = {
                "sku": sku.strip(),
                "name": name.strip(),
                "description": description.strip(),
                "price_cents": dollars_to_cents(price),
                "par_level": int(par_level),
                "reorder_quantity": int(reorder),
                "requires_prescription": prescription,
                "perishable": perishable,
                "ndc_code": ndc.strip() or None,
                "rxnorm_code": rxnorm.strip() or None,
            }
            changes = {k: v for k, v in wanted.items() if v != product.get(k)}
            if not changes:
                st.info("Nothing changed.")
            else:
                try:
                    api.patch(f"/products/{pid}", json=changes)
                except ApiProblem as problem:
                    ui.show_problem(problem)
                else:
                    flash(f"Saved {wanted['name']}: {', '.join(sorted(changes))} changed.")

with archive_tab:
    product = labels[st.selectbox("Product", list(labels), key="products.archive.pick")]
    if product["active"]:
        st.caption(
            "A product that has had stock is archived: hidden from doctors and the public"
            " catalog, its lots and history kept. One that never had stock is deleted."
        )
        if ui.confirm(
            "Archive product",
            key=f"products.archive.{product['id']}",
            warning=(
                f"{product['name']} ({product['sku']}) can no longer be ordered. Orders already"
                " placed are not affected."
            ),
        ):
            try:
                removal = api.delete(f"/products/{product['id']}")
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                flash(f"{product['name']} was {removal['outcome']}.")
    else:
        st.caption(f"{product['name']} is archived.")
        if st.button("Restore product", key=f"products.restore.{product['id']}"):
            try:
                api.patch(f"/products/{product['id']}", json={"active": True})
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                flash(f"{product['name']} is active again.")
