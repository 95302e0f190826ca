"""Doctor: my patients. Search, add a patient, correct a patient's details."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboards import patients as my
from dashboards import session, ui
from dashboards.api import ApiProblem

session.require_role("doctor")
api = session.api()

st.title("My patients")
message = st.session_state.pop("patients.done", None)
if message:
    st.success(message, icon=":material/check_circle:")


def done(text: str) -> None:
    my.forget()
    st.session_state["patients.done"] = text
    st.rerun()


patients = my.my_patients(api)
search_col, refresh_col = st.columns([4, 1], vertical_alignment="bottom")
search = search_col.text_input(
    "Search by name, e-mail, phone or date of birth (YYYY-MM-DD)",
    max_chars=200,
    key="patients.search",
)
if refresh_col.button("Refresh", key="patients.refresh", icon=":material/refresh:"):
    my.forget()
    st.rerun()
found = [p for p in patients if my.matches(p, search)]
ui.data_table(
    pd.DataFrame(
        [
            {
                "Name": p["name"],
                "Date of birth": p["date_of_birth"],
                "E-mail": p["email"],
                "Phone": p["phone"],
                "Added": ui.day(p["created_at"]),
            }
            for p in found
        ]
    ),
    "my patients",
    empty="No patient matches your search."
    if patients
    else "You have no patient yet: add one below.",
    key="patients.csv",
)

OLDEST = date(1900, 1, 1)


def details_form(key: str, current: dict[str, str] | None = None) -> dict[str, str] | None:
    """The patient's details as the API takes them, or None until submitted."""
    current = current or {}
    with st.form(key, clear_on_submit=current == {}):
        name = st.text_input(
            "Full name", value=current.get("name", ""), max_chars=200, key=f"{key}.name"
        )
        email = st.text_input(
            "E-mail", value=current.get("email", ""), max_chars=254, key=f"{key}.email"
        )
        phone = st.text_input(
            "Phone",
            value=current.get("phone", ""),
            max_chars=24,
            placeholder="+1 555 010 0199",
            key=f"{key}.phone",
        )
        born = st.date_input(
            "Date of birth",
            value=date.fromisoformat(current["date_of_birth"]) if current else None,
            min_value=OLDEST,
            max_value=ui.today(),
            format="YYYY-MM-DD",
            key=f"{key}.born",
        )
        submitted = st.form_submit_button(
            "Save" if current else "Add patient", type="primary", key=f"{key}.submit"
        )
    if not submitted:
        return None
    if not (name.strip() and email.strip() and phone.strip() and isinstance(born, date)):
        st.warning("Fill in the name, e-mail, phone and date of birth.")
        return None
    return {
        "name": name.strip(),
        "email": email.strip(),
        "phone": phone.strip(),
        "date_of_birth": born.isoformat(),
    }


add_tab, edit_tab = st.tabs(["Add a patient", "Correct details"])
with add_tab:
    new = details_form("patients.add")
    if new is not None:
        try:
            created = api.post("/patients", json=new)
        except ApiProblem as problem:
            ui.show_problem(problem)
        else:
            done(f"{created['name']} is added to your patients.")

with edit_tab:
    by_label = {my.label(p): p for p in found}
    chosen = st.selectbox(
        "Patient", list(by_label), index=None, placeholder="Choose a patient", key="patients.edit"
    )
    if chosen:
        patient = by_label[chosen]
        changed = details_form(f"patients.edit.{patient['id']}", patient)
        if changed is not None:
            changes = {k: v for k, v in changed.items() if v != patient[k]}
            if not changes:
                st.info("Nothing was changed.")
            else:
                try:
                    api.patch(f"/patients/{patient['id']}", json=changes)
                except ApiProblem as problem:
                    ui.show_problem(problem)
                else:
                    done(f"{changed['name']}'s details are saved.")
