"""The signed-in doctor's patients, read once per session (and again after a change or on
"Refresh"): every patient listed is a PHI read in the audit log, and Streamlit re-runs a page on
every click, so re-reading them each time would fill the log with reads nobody made."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboards.api import PortalApi

KEY = "doctor.patients"
MAX_PATIENTS = 2000


def my_patients(api: PortalApi) -> list[dict[str, Any]]:
    cached = st.session_state.get(KEY)
    if isinstance(cached, list):
        return cached
    patients: list[dict[str, Any]] = api.items("/patients", at_most=MAX_PATIENTS)
    st.session_state[KEY] = patients
    return patients


def forget() -> None:
    """After a create or an edit, or on "Refresh": read them again on the next run."""
    st.session_state.pop(KEY, None)


def label(patient: dict[str, Any]) -> str:
    return f"{patient['name']} · born {patient['date_of_birth']} · {patient['email']}"


def matches(patient: dict[str, Any], search: str) -> bool:
    """Whether the search text is in the name, e-mail or phone (case and spacing ignored;
    phone by its digits)."""
    text = " ".join(search.split()).casefold()
    if not text:
        return True
    digits = "".join(c for c in search if c.isdigit())
    phone = "".join(c for c in patient["phone"] if c.isdigit())
    return (
        text in " ".join(patient["name"].split()).casefold()
        or text in patient["email"].casefold()
        or (len(digits) >= 3 and digits in phone)
        or text == patient["date_of_birth"]
    )
