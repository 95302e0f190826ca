"""What the admins' "Orders and payments" page and the doctors' "My orders" page share: the
orders table (status, payment state, pharmacy state) and an order's detail with its timeline and
the actions its state allows. Every read and write goes through the API as the signed-in member."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import ui
from dashboards.api import ApiProblem, PortalApi

STATUSES = ["pending", "paid", "fulfilled", "cancelled"]

# The cancellation codes staff may give (the API's `StaffCancellationReason`), in plain words.
CANCEL_REASONS = {
    "patient_request": "Patient's request",
    "prescriber_change": "Prescriber changed the order",
    "duplicate_order": "Duplicate order",
    "entered_in_error": "Entered in error",
    "out_of_stock": "Out of stock",
    "other": "Other",
}

PAYMENT_WORDS = {
    None: "not started",
    "requires_payment_method": "awaiting payment",
    "requires_confirmation": "awaiting payment",
    "requires_action": "awaiting the patient",
    "processing": "bank payment processing",
    "requires_capture": "authorised",
    "succeeded": "paid",
    "canceled": "payment cancelled",
}

PHARMACY_WORDS = {
    "pending": "queued",
    "sending": "sending",
    "submitted": "submitted",
    "accepted": "accepted",
    "rejected": "rejected",
    "dispensed": "dispensed",
    "cancelled": "cancelled",
    "dead_letter": "failed (needs an admin)",
}


def reference(order_id: str) -> str:
    """The order's reference as its patient reads it (the id's first 8 characters)."""
    return order_id[:8].upper()


def payment_state(order: Mapping[str, Any]) -> str:
    words = PAYMENT_WORDS.get(order.get("payment_status"), str(order.get("payment_status")))
    refunded = order.get("refunded_cents") or 0
    if refunded:
        words += f", refunded {ui.money(refunded, order.get('currency', 'usd'))}"
    if order.get("disputed"):
        words += ", disputed"
    return words


def pharmacy_state(order: Mapping[str, Any]) -> str:
    statuses = order.get("pharmacy_statuses") or []
    if not statuses:
        return "—"
    return ", ".join(PHARMACY_WORDS.get(status, status) for status in statuses)


def orders_frame(
    orders: list[dict[str, Any]], extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> pd.DataFrame:
    """The orders as a table: reference, created (clinic time), status, total, payment and
    pharmacy state, plus whatever `extra` adds per order."""
    rows = []
    for order in orders:
        row = {
            "Reference": reference(order["id"]),
            "Created": ui.when(order["created_at"]),
            "Status": order["status"],
            "Total": ui.money(order["total_cents"], order["currency"]),
            "Payment": payment_state(order),
            "Pharmacy": pharmacy_state(order),
        }
        if extra:
            row.update(extra(order))
        rows.append(row)
    return pd.DataFrame(rows)


def choose_order(
    orders: list[dict[str, Any]], key: str, label: str = "Open an order"
) -> str | None:
    """A picker of the listed orders (by id, so the choice survives a change of the order's
    status or total); returns the chosen order's id."""
    labels = {
        o[
            "id"
        ]: f"{reference(o['id'])} · {o['status']} · {ui.money(o['total_cents'], o['currency'])}"
        f" · {ui.when(o['created_at'])}"
        for o in orders
    }
    chosen = st.selectbox(
        label,
        list(labels),
        index=None,
        key=key,
        format_func=labels.__getitem__,
        placeholder="Choose an order",
    )
    return str(chosen) if chosen else None


def timeline_frame(timeline: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"When": ui.when(event["at"]), "What": event["summary"], "By": event["actor_role"]}
            for event in timeline["events"]
        ]
    )


def items_frame(order: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "SKU": item["sku"],
                "Product": item["name"],
                "Quantity": item["quantity"],
                "Unit price": ui.money(item["unit_price_cents"], order["currency"]),
                "Line total": ui.money(item["line_total_cents"], order["currency"]),
                "Directions": item.get("dosage_text") or "",
            }
            for item in order["items"]
        ]
    )


def order_detail(
    api: PortalApi,
    order_id: str,
    *,
    key: str,
    can_fulfil: bool = False,
    can_edit: bool = False,
) -> None:
    """One order: its figures, items, pharmacy and timeline, then the actions its state allows
    (cancel, re-send the payment link; fulfil for admins; edit items for doctors)."""
    order = api.get(f"/orders/{order_id}")
    timeline = api.get(f"/orders/{order_id}/timeline")
    currency = order["currency"]
    st.subheader(f"Order {reference(order['id'])}")
    status, total, created = st.columns(3)
    status.metric("Status", order["status"])
    total.metric("Total", ui.money(order["total_cents"], currency))
    created.metric("Created", ui.day(order["created_at"]))
    if order["status"] == "pending":
        st.caption(f"The payment window closes {ui.when(order['expires_at'])}.")
    if order.get("cancellation_reason"):
        reason = CANCEL_REASONS.get(order["cancellation_reason"], order["cancellation_reason"])
        st.caption(f"Cancelled: {reason}.")
    ui.data_table(items_frame(order), f"order {reference(order['id'])} items", key=f"{key}.items")
    if order.get("pharmacy"):
        st.markdown("**Pharmacy**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Pharmacy": p["pharmacy_name"] or "none configured",
                        "Status": PHARMACY_WORDS.get(p["status"], p["status"]),
                        "Submitted": ui.when(p["submitted_at"]),
                        "Dispensed": ui.when(p["dispensed_at"]),
                    }
                    for p in order["pharmacy"]
                ]
            ),
            hide_index=True,
            use_container_width=True,
        )
    st.markdown("**Timeline**")
    ui.data_table(
        timeline_frame(timeline),
        f"order {reference(order['id'])} timeline",
        empty="Nothing has happened to this order yet.",
        key=f"{key}.timeline",
    )
    _actions(api, order, key=key, can_fulfil=can_fulfil, can_edit=can_edit)


def _done(message: str, key: str) -> None:
    """A write succeeded: say so after the rerun that shows its effect."""
    st.session_state[f"{key}.done"] = message
    st.rerun()


def show_done(key: str) -> None:
    message = st.session_state.pop(f"{key}.done", None)
    if message:
        st.success(message, icon=":material/check_circle:")


def _actions(
    api: PortalApi, order: Mapping[str, Any], *, key: str, can_fulfil: bool, can_edit: bool
) -> None:
    order_id, status = order["id"], order["status"]
    if status not in ("pending", "paid"):
        st.caption("A fulfilled or cancelled order cannot change any more.")
        return
    st.markdown("**Actions**")
    if status == "pending":
        link = st.session_state.get(f"{key}.link.{order_id}")
        if link:
            st.write("New payment link (also e-mailed to the patient):")
            st.code(link, language=None)
        if ui.confirm(
            "Re-send the payment link",
            f"{key}.resend.{order_id}",
            "The patient gets a new link by e-mail; every earlier link of this order stops"
            " working.",
        ):
            try:
                issued = api.post(f"/orders/{order_id}/checkout-link")
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                st.session_state[f"{key}.link.{order_id}"] = issued["checkout_url"]
                _done("A new payment link was e-mailed to the patient.", key)
        if can_edit:
            _edit_items(api, order, key=key)
    if (
        status == "paid"
        and can_fulfil
        and ui.confirm(
            "Fulfil the order",
            f"{key}.fulfil.{order_id}",
            "Its reserved units leave stock: do this when the items are handed over or shipped.",
        )
    ):
        try:
            api.post(f"/orders/{order_id}/fulfil")
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            _done(f"Order {reference(order_id)} is fulfilled.", key)
    _cancel(api, order, key=key)


def _cancel(api: PortalApi, order: Mapping[str, Any], *, key: str) -> None:
    order_id = order["id"]
    paid = order["status"] == "paid"
    with st.expander("Cancel the order" + (" and refund it" if paid else "")):
        reason = st.selectbox(
            "Reason",
            list(CANCEL_REASONS),
            format_func=CANCEL_REASONS.__getitem__,
            key=f"{key}.cancel_reason.{order_id}",
        )
        note = st.text_area(
            "Note (optional, kept encrypted)",
            max_chars=1000,
            key=f"{key}.cancel_note.{order_id}",
        )
        warning = "Its stock is released and the patient is told by e-mail."
        if paid:
            warning = (
                f"The patient is refunded {ui.money(order['total_cents'], order['currency'])}, "
                + warning[0].lower()
                + warning[1:]
            )
        if ui.confirm("Cancel the order", f"{key}.cancel.{order_id}", warning):
            body: dict[str, Any] = {"reason": reason}
            if note.strip():
                body["note"] = note.strip()
            try:
                api.post(f"/orders/{order_id}/cancel", json=body)
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                _done(
                    f"Order {reference(order_id)} is cancelled"
                    + (" and its refund is on its way." if paid else "."),
                    key,
                )


def _edit_items(api: PortalApi, order: Mapping[str, Any], *, key: str) -> None:
    order_id = order["id"]
    with st.expander("Change quantities"):
        st.caption("Set a quantity to 0 to remove the item; stock is reserved again, all or none.")
        quantities: dict[str, int] = {}
        for item in order["items"]:
            quantities[item["product_id"]] = int(
                st.number_input(
                    f"{item['name']} ({item['sku']})",
                    min_value=0,
                    max_value=1_000_000,
                    value=int(item["quantity"]),
                    step=1,
                    key=f"{key}.edit.{order_id}.{item['product_id']}",
                )
            )
        if st.button("Save quantities", key=f"{key}.edit_save.{order_id}"):
            lines = [
                {"product_id": product_id, "quantity": quantity}
                for product_id, quantity in quantities.items()
                if quantity > 0
            ]
            if not lines:
                st.warning("An order keeps at least one item: cancel it instead.")
                return
            try:
                api.patch(f"/orders/{order_id}", json={"items": lines})
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                _done(f"Order {reference(order_id)} now has the new quantities.", key)
