"""Admin: the audit log with filters (actor, entity, action, time), the hash chain's
verification, and the access review (who read PHI, per user and role)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from dashboards import session, ui
from dashboards.api import ApiProblem
from dashboards.settings import get_ui_settings

session.require_role("admin")
api = session.api()

ROLES = ["admin", "doctor", "system", "checkout-link"]


def period(key: str, days: int) -> tuple[str, str] | None:
    """From and to dates in the clinic's time zone, as the API's instants (the end exclusive)."""
    zone = get_ui_settings().zone
    first_col, last_col = st.columns(2)
    first = first_col.date_input("From", ui.today() - timedelta(days=days), key=f"{key}.from")
    last = last_col.date_input("To (inclusive)", ui.today(), key=f"{key}.to")
    if not isinstance(first, date) or not isinstance(last, date):
        return None
    if last < first:
        st.warning("The period ends before it starts.")
        return None
    start = datetime.combine(first, time.min, tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone)
    return start.isoformat(), end.isoformat()


st.title("Audit log")
log_tab, chain_tab, review_tab = st.tabs(["Log", "Chain verification", "PHI reads"])

with log_tab:
    actor_col, role_col, action_col = st.columns(3)
    actor = actor_col.text_input("Actor (subject)", max_chars=255, key="audit.actor").strip()
    role = role_col.selectbox("Role", ["all", *ROLES], key="audit.role")
    action = action_col.text_input(
        "Action",
        max_chars=32,
        key="audit.action",
        help="Exact (order.cancelled) or a family (order.)",
    ).strip()
    entity_col, entity_id_col = st.columns(2)
    entity_type = entity_col.text_input(
        "Entity type", max_chars=64, key="audit.entity_type", help="order, patient, lot, user, ..."
    ).strip()
    entity_id = entity_id_col.text_input("Entity id", max_chars=64, key="audit.entity_id").strip()
    window = period("audit.log", 7)
    if window is not None:
        try:
            entries = api.items(
                "/audit",
                at_most=500,
                actor_subject=actor or None,
                actor_role=None if role == "all" else role,
                action=action or None,
                entity_type=entity_type or None,
                entity_id=entity_id or None,
                occurred_from=window[0],
                occurred_to=window[1],
            )
        except ApiProblem as problem:
            ui.show_problem(problem)
            entries = []
        ui.data_table(
            pd.DataFrame(
                [
                    {
                        "When": ui.when(e["occurred_at"]),
                        "Actor": e["actor_subject"],
                        "Role": e["actor_role"],
                        "Action": e["action"],
                        "Entity": e["entity_type"],
                        "Entity id": e["entity_id"],
                        "Before": "" if e["before"] is None else str(e["before"]),
                        "After": "" if e["after"] is None else str(e["after"]),
                        "From": e["client_address"] or "",
                        "Chained": "yes" if e["seq"] is not None else "pending",
                    }
                    for e in entries
                ]
            ),
            "audit log",
            empty="No audit row matches these filters.",
            key="audit.csv",
        )
        if len(entries) == 500:
            st.caption("The newest 500 rows are shown: narrow the filters to see older ones.")

with chain_tab:
    st.write(
        "Every row is chained to the one before by its hash: the check walks the whole chain and"
        " names the first row that was changed, deleted or reordered."
    )
    if st.button("Verify the chain now", key="audit.verify", type="primary"):
        try:
            result = api.get("/audit/verification")
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            if result["ok"]:
                st.success(
                    f"The chain is intact: {result['rows_checked']:,} rows checked.",
                    icon=":material/verified:",
                )
            else:
                st.error(
                    f"The chain is broken at row {result['first_bad_seq']}: {result['problem']}",
                    icon=":material/gpp_bad:",
                )
            if result["sealing_overdue"]:
                st.warning(
                    f"{result['unsealed_rows']} rows have waited minutes to be chained:"
                    " is the worker running?"
                )
            st.caption(f"Head of the chain: `{result['head_hash']}`")

with review_tab:
    st.write("Who read patients' details, orders' items and prescriptions, per user and role.")
    review_role = st.selectbox("Role", ["all", *ROLES], key="audit.review_role")
    review_window = period("audit.review", 30)
    if review_window is not None:
        review = api.get(
            "/audit/phi-reads",
            occurred_from=review_window[0],
            occurred_to=review_window[1],
            actor_role=None if review_role == "all" else review_role,
            limit=500,
        )
        ui.data_table(
            pd.DataFrame(
                [
                    {
                        "Reader": r["actor_subject"],
                        "Role": r["actor_role"],
                        "PHI reads": r["reads"],
                        "Patients read": r["patients_read"],
                        "Orders read": r["orders_read"],
                        "Order lists": r["lists_read"],
                        "Pharmacy records": r["pharmacy_records_read"],
                        "First": ui.when(r["first_at"]),
                        "Last": ui.when(r["last_at"]),
                    }
                    for r in review["readers"]
                ]
            ),
            "phi reads",
            empty="Nobody read PHI in this period.",
            key="audit.review_csv",
        )
