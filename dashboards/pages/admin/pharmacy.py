"""Admin: prescriptions sent to pharmacies, by status with their attempts; re-send a dead letter;
the pharmacies configured (credentials are never shown, only whether one is stored)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import orders_view, session, ui
from dashboards.api import ApiProblem

session.require_role("admin")
api = session.api()

STATUSES = [
    "dead_letter",
    "pending",
    "sending",
    "submitted",
    "accepted",
    "rejected",
    "dispensed",
    "cancelled",
]

st.title("Pharmacy")
message = st.session_state.pop("pharmacy.done", None)
if message:
    st.success(message, icon=":material/check_circle:")
submissions_tab, configuration_tab = st.tabs(["Submissions", "Configuration"])

with submissions_tab:
    status = st.selectbox(
        "Status",
        ["all", *STATUSES],
        format_func=lambda s: "all" if s == "all" else orders_view.PHARMACY_WORDS.get(s, s),
        key="pharmacy.status",
    )
    submissions = api.items(
        "/pharmacy-submissions", at_most=500, status=None if status == "all" else status
    )
    ui.data_table(
        pd.DataFrame(
            [
                {
                    "Created": ui.when(s["created_at"]),
                    "Order": orders_view.reference(s["order_id"]),
                    "Pharmacy": s["pharmacy_name"] or "none configured",
                    "Status": orders_view.PHARMACY_WORDS.get(s["status"], s["status"]),
                    "Attempts": s["attempts"],
                    "Next attempt": ui.when(s["next_attempt_at"])
                    if s["status"] == "pending"
                    else "—",
                    "Last error": s["last_error"] or "",
                    "Submitted": ui.when(s["submitted_at"]),
                    "Dispensed": ui.when(s["dispensed_at"]),
                }
                for s in submissions
            ]
        ),
        "pharmacy submissions",
        empty="No prescription has this status."
        if status != "all"
        else "No prescription was sent to a pharmacy yet.",
        key="pharmacy.csv",
    )
    dead = [s for s in submissions if s["status"] == "dead_letter"]
    if dead:
        st.subheader("Re-send a dead letter")
        labels = {
            f"Order {orders_view.reference(s['order_id'])} · {s['pharmacy_name'] or 'no pharmacy'}"
            f" · {s['attempts']} attempts": s
            for s in dead
        }
        chosen = st.selectbox(
            "Dead letter", list(labels), index=None, placeholder="Choose", key="pharmacy.dead"
        )
        if chosen:
            submission = labels[chosen]
            if submission["last_error"]:
                st.caption(f"Last error: {submission['last_error']}")
            if ui.confirm(
                "Re-send",
                f"pharmacy.resend.{submission['id']}",
                "The prescription goes back in the queue with fresh attempts; the pharmacy"
                " receives it again (it recognises a repeat of one it already has).",
            ):
                try:
                    api.post(f"/pharmacy-submissions/{submission['id']}/resend")
                except ApiProblem as problem:
                    ui.show_problem(problem)
                else:
                    st.session_state["pharmacy.done"] = (
                        f"The prescription of order {orders_view.reference(submission['order_id'])}"
                        " is queued again."
                    )
                    st.rerun()

with configuration_tab:
    pharmacies = api.items("/pharmacies", at_most=200)
    ui.data_table(
        pd.DataFrame(
            [
                {
                    "Name": p["name"],
                    "Default": "yes" if p["is_default"] else "",
                    "Active": "yes" if p["active"] else "no",
                    "Connector": p["connector"],
                    "Base URL": p["base_url"],
                    "Authentication": p["auth_kind"],
                    "API key": "stored" if p["api_key_set"] else "—",
                    "Client secret": "stored" if p["client_secret_set"] else "—",
                    "Client id": p["client_id"] or "",
                    "Timeout (s)": p["timeout_seconds"],
                }
                for p in pharmacies
            ]
        ),
        "pharmacies",
        empty="No pharmacy is configured: paid prescriptions wait until one is.",
        key="pharmacies.csv",
    )
    st.caption("Secrets are never shown; change them through the API (`PATCH /pharmacies/{id}`).")
    if pharmacies:
        names = {p["name"]: p for p in pharmacies}
        name = st.selectbox("Test the connection to", list(names), key="pharmacy.test_target")
        if st.button("Test connection", key="pharmacy.test"):
            try:
                result = api.post(f"/pharmacies/{names[name]['id']}/test-connection")
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                if result["ok"]:
                    st.success(f"{name} answered in {result['duration_ms']:.0f} ms.")
                else:
                    st.error(f"{name} did not answer as expected: {result['message']}")
