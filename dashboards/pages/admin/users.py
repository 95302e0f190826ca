"""Admin: staff accounts. Invite a doctor or an admin by e-mail, change a role, deactivate or
reactivate (a deactivated account is refused at once by the API and by this portal)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import session, ui
from dashboards.api import ApiProblem

me = session.require_role("admin")
api = session.api()

ROLES = ["doctor", "admin"]

st.title("Users")
message = st.session_state.pop("users.done", None)
if message:
    st.success(message, icon=":material/check_circle:")


def done(text: str) -> None:
    st.session_state["users.done"] = text
    st.rerun()


users = api.items("/users", at_most=1000)
shown = st.radio("Show", ["active", "deactivated", "all"], horizontal=True, key="users.show")
listed = [
    u for u in users if shown == "all" or (u["active"] if shown == "active" else not u["active"])
]
ui.data_table(
    pd.DataFrame(
        [
            {
                "E-mail": u["email"] or "—",
                "Name": u["full_name"] or "",
                "Role": u["role"],
                "Active": "yes" if u["active"] else "no",
                "Signed in yet": "yes" if u["signed_in"] else "invited",
                "Since": ui.day(u["created_at"]),
            }
            for u in listed
        ]
    ),
    "users",
    empty="No user here.",
    key="users.csv",
)

st.subheader("Invite")
with st.form("users.invite", clear_on_submit=True):
    email = st.text_input("E-mail", max_chars=254, key="users.invite.email")
    full_name = st.text_input("Name (optional)", max_chars=200, key="users.invite.name")
    role = st.selectbox("Role", ROLES, key="users.invite.role")
    invited = st.form_submit_button("Invite", type="primary", key="users.invite.submit")
if invited:
    body = {"email": email.strip(), "role": role}
    if full_name.strip():
        body["full_name"] = full_name.strip()
    try:
        api.post("/users", json=body)
    except ApiProblem as problem:
        ui.show_problem(problem)
    else:
        done(
            f"{email.strip()} is invited as {role}: they sign in with that e-mail at the clinic's"
            " identity provider."
        )

st.subheader("Change an account")
by_id = {u["id"]: u for u in users}


def account_label(user_id: str) -> str:
    user = by_id[user_id]
    state = "" if user["active"] else ", deactivated"
    return f"{user['email'] or user['id']} ({user['role']}{state})"


# Chosen by id, so the choice stays while the account's role or state changes.
chosen = st.selectbox(
    "Account",
    list(by_id),
    index=None,
    format_func=account_label,
    placeholder="Choose an account",
    key="users.chosen",
)
if chosen:
    user = by_id[chosen]
    is_me = user["id"] == me.user_id
    if is_me:
        st.caption("This is your own account: another admin changes your role or deactivates it.")
    new_role = st.selectbox(
        "Role", ROLES, index=ROLES.index(user["role"]), key=f"users.role.{user['id']}"
    )
    if st.button(
        "Save the role",
        key=f"users.save_role.{user['id']}",
        disabled=is_me or new_role == user["role"],
    ):
        try:
            api.patch(f"/users/{user['id']}", json={"role": new_role})
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            done(f"{user['email']} is now {new_role}.")
    if user["active"]:
        if ui.confirm(
            "Deactivate the account",
            f"users.deactivate.{user['id']}",
            f"{user['email']} is signed out of the API and this portal at once and cannot sign"
            " in again until reactivated. Their patients and orders stay.",
            disabled=is_me,
        ):
            try:
                api.patch(f"/users/{user['id']}", json={"active": False})
            except ApiProblem as problem:
                ui.show_problem(problem)
            else:
                done(f"{user['email']} is deactivated.")
    elif st.button("Reactivate the account", key=f"users.reactivate.{user['id']}"):
        try:
            api.patch(f"/users/{user['id']}", json={"active": True})
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            done(f"{user['email']} is active again.")
