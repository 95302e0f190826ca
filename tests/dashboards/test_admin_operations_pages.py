"""The admins' operational pages against the live API (AppTest, signed in with real tokens of
the development provider): orders and payments, users, pharmacy, audit log; and the role
gating of every page of this set, by the menu and by the page's own check (its URL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import text

from app.db import make_engine
from tests.fixtures.portal_orders import (
    answer,
    new_order,
    new_patient,
    pages_as_the_app_sees_them,
    pay_order,
    stocked_product,
)
from tests.fixtures.portal_ui import (
    PortalUiStack,
    add_staff,
    app_test,
    new_email,
    open_page,
    page_test,
    staff_token,
    texts,
    ui_environment_for,
)

ADMIN_PAGES = ["admin/orders.py", "admin/users.py", "admin/pharmacy.py", "admin/audit.py"]
DOCTOR_PAGES = ["doctor/patients.py", "doctor/new_order.py", "doctor/orders.py"]
API_KEY = "rk_live_portal_ui_test_0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def _streamlit_pages_decided_by_the_app() -> None:
    pages_as_the_app_sees_them()


@pytest.fixture(scope="module")
def admin_token(portal_stack: PortalUiStack) -> str:
    return staff_token(portal_stack, "admin")


@pytest.fixture(scope="module")
def admin_api(portal_stack: PortalUiStack, admin_token: str) -> Iterator[httpx.Client]:
    with portal_stack.client(admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def doctor(portal_stack: PortalUiStack) -> tuple[str, str]:
    """A doctor of this module's own: (e-mail, access token)."""
    email = new_email("dr-admin-pages")
    add_staff(portal_stack.issuer, email, "doctor")
    return email, staff_token(portal_stack, "doctor", email)


@pytest.fixture(scope="module")
def doctor_api(portal_stack: PortalUiStack, doctor: tuple[str, str]) -> Iterator[httpx.Client]:
    with portal_stack.client(doctor[1]) as client:
        yield client


@pytest.fixture
def run_page(portal_stack: PortalUiStack, admin_token: str) -> Iterator[Any]:
    with ui_environment_for(portal_stack):
        yield lambda file: page_test(file, admin_token, email="admin@demo.clinic").run()


def frames(at: Any) -> list[pd.DataFrame]:
    return [element.value for element in at.dataframe]


def test_orders_finds_a_paid_order_by_reference_and_fulfils_it_after_confirmation(
    run_page: Any,
    admin_api: httpx.Client,
    doctor_api: httpx.Client,
    portal_stack: PortalUiStack,
) -> None:
    product = stocked_product(admin_api, quantity=10)
    order = new_order(doctor_api, new_patient(doctor_api), product, quantity=2)
    pay_order(portal_stack.database, order["id"])
    reference = order["id"][:8].upper()

    at = run_page("admin/orders.py")
    at = at.text_input(key="orders.reference").input(reference).run()

    assert not at.exception
    orders, payments = frames(at)[:2]
    assert list(orders["Reference"]) == [reference]
    assert (orders["Status"].iloc[0], orders["Payment"].iloc[0]) == ("paid", "paid")
    assert reference in set(payments["Order"])

    at = at.selectbox(key="orders.chosen").set_value(order["id"]).run()
    timeline = next(df for df in frames(at) if "What" in df.columns)
    assert list(timeline["What"])[-1] == "Paid"
    at = at.button(key=f"orders.fulfil.{order['id']}").click().run()
    assert answer(admin_api.get(f"/orders/{order['id']}"))["status"] == "paid"  # asked first
    at = at.button(key=f"orders.fulfil.{order['id']}.yes").click().run()

    assert not at.exception
    assert f"Order {reference} is fulfilled." in texts(at)
    assert answer(admin_api.get(f"/orders/{order['id']}"))["status"] == "fulfilled"


def test_orders_resends_a_pending_orders_link_and_cancels_a_paid_one_with_its_refund(
    run_page: Any,
    admin_api: httpx.Client,
    doctor_api: httpx.Client,
    portal_stack: PortalUiStack,
) -> None:
    product = stocked_product(admin_api, quantity=10)
    pending = new_order(doctor_api, new_patient(doctor_api), product)
    paid = new_order(doctor_api, new_patient(doctor_api), product)
    pay_order(portal_stack.database, paid["id"])

    at = run_page("admin/orders.py")
    at = at.selectbox(key="orders.chosen").set_value(pending["id"]).run()
    at = at.button(key=f"orders.resend.{pending['id']}").click().run()
    at = at.button(key=f"orders.resend.{pending['id']}.yes").click().run()
    assert not at.exception
    assert "A new payment link was e-mailed to the patient." in texts(at)
    assert at.code[0].value.startswith(f"{portal_stack.api}/pay/")

    at = at.selectbox(key="orders.chosen").set_value(paid["id"]).run()
    at.selectbox(key=f"orders.cancel_reason.{paid['id']}").set_value("patient_request")
    at = at.button(key=f"orders.cancel.{paid['id']}").click().run()
    assert "The patient is refunded $12.50" in texts(at)
    at = at.button(key=f"orders.cancel.{paid['id']}.yes").click().run()

    assert not at.exception
    assert "is cancelled and its refund is on its way." in texts(at)
    events = answer(admin_api.get(f"/orders/{paid['id']}/timeline"))["events"]
    assert events[-1]["summary"] == "Cancelled (patient request)"


def test_users_invites_changes_a_role_and_deactivates_after_confirmation(
    run_page: Any, admin_api: httpx.Client
) -> None:
    email = new_email("invited")
    at = run_page("admin/users.py")
    at.text_input(key="users.invite.email").input(email)
    at.text_input(key="users.invite.name").input("Dr. Invited")
    at = at.button(key="users.invite.submit").click().run()
    assert not at.exception
    assert f"{email} is invited as doctor" in texts(at)
    (user,) = [
        u
        for u in answer(admin_api.get("/users", params={"limit": 200}))["items"]
        if u["email"] == email
    ]
    assert (user["role"], user["active"], user["signed_in"]) == ("doctor", True, False)

    at = at.selectbox(key="users.chosen").set_value(user["id"]).run()
    at = at.selectbox(key=f"users.role.{user['id']}").select("admin").run()
    at = at.button(key=f"users.save_role.{user['id']}").click().run()
    assert f"{email} is now admin." in texts(at)
    # The account stays chosen while its role changes.
    at = at.button(key=f"users.deactivate.{user['id']}").click().run()
    at = at.button(key=f"users.deactivate.{user['id']}.yes").click().run()

    assert not at.exception
    assert f"{email} is deactivated." in texts(at)
    (after,) = [
        u
        for u in answer(admin_api.get("/users", params={"limit": 200}))["items"]
        if u["email"] == email
    ]
    assert (after["role"], after["active"]) == ("admin", False)


def test_an_admin_cannot_deactivate_themselves_from_the_page(
    run_page: Any, admin_api: httpx.Client
) -> None:
    me = answer(admin_api.get("/users/me"))
    at = run_page("admin/users.py")
    at = at.selectbox(key="users.chosen").set_value(me["id"]).run()

    assert at.button(key=f"users.deactivate.{me['id']}").disabled
    assert "This is your own account" in texts(at)


def test_pharmacy_lists_submissions_resends_a_dead_letter_and_never_shows_a_secret(
    run_page: Any,
    admin_api: httpx.Client,
    doctor_api: httpx.Client,
    portal_stack: PortalUiStack,
) -> None:
    pharmacy = answer(
        admin_api.post(
            "/pharmacies",
            json={
                "name": f"Corner Pharmacy {uuid.uuid4().hex[:6]}",
                "connector": "fhir_r4",
                "base_url": "http://127.0.0.1:9/fhir",
                "auth_kind": "api_key",
                "auth_header": "X-Api-Key",
                "api_key": API_KEY,
                "is_default": False,
            },
        ),
        201,
    )
    rx = stocked_product(
        admin_api,
        requires_prescription=True,
        rxnorm_code="308191",
        ndc_code="0093-3109-01",
        pharmacy_id=pharmacy["id"],
    )
    order = new_order(doctor_api, new_patient(doctor_api), rx)
    pay_order(portal_stack.database, order["id"])
    # What the worker leaves when the pharmacy stayed unreachable through every attempt (no
    # worker runs beside this stack).
    engine = make_engine(portal_stack.database.app_url, pool_size=1)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE pharmacy_submissions SET status = 'dead_letter', attempts = 8,"
                " last_error = 'gave up after 8 attempts: connection refused'"
                " WHERE order_id = :order"
            ),
            {"order": uuid.UUID(order["id"])},
        )
    engine.dispose()
    reference = order["id"][:8].upper()

    at = run_page("admin/pharmacy.py")  # opens on every status
    at = at.selectbox(key="pharmacy.status").set_value("dead_letter").run()
    assert not at.exception
    submissions, pharmacies = frames(at)[:2]
    mine = submissions[submissions["Order"] == reference].iloc[0]
    assert (mine["Status"], mine["Attempts"], mine["Pharmacy"]) == (
        "failed (needs an admin)",
        8,
        pharmacy["name"],
    )
    configured = pharmacies[pharmacies["Name"] == pharmacy["name"]].iloc[0]
    assert configured["API key"] == "stored"
    assert API_KEY not in repr(frames(at)) and API_KEY not in texts(at)

    label = next(o for o in at.selectbox(key="pharmacy.dead").options if reference in o)
    at = at.selectbox(key="pharmacy.dead").select(label).run()
    (submission,) = answer(
        admin_api.get("/pharmacy-submissions", params={"order_id": order["id"]})
    )["items"]
    at = at.button(key=f"pharmacy.resend.{submission['id']}").click().run()
    at = at.button(key=f"pharmacy.resend.{submission['id']}.yes").click().run()

    assert not at.exception
    assert f"The prescription of order {reference} is queued again." in texts(at)
    (resent,) = answer(admin_api.get("/pharmacy-submissions", params={"order_id": order["id"]}))[
        "items"
    ]
    assert (resent["status"], resent["attempts"]) == ("pending", 0)


def test_audit_log_filters_reviews_phi_reads_and_verifies_the_chain(
    run_page: Any, doctor_api: httpx.Client, doctor: tuple[str, str]
) -> None:
    patient = new_patient(doctor_api)
    doctor_api.get(f"/patients/{patient['id']}")

    at = run_page("admin/audit.py")
    at.text_input(key="audit.entity_id").input(patient["id"])
    at = at.text_input(key="audit.action").input("patient.").run()

    assert not at.exception
    log = frames(at)[0]
    assert set(log["Action"]) == {"patient.created", "patient.read"}
    assert set(log["Role"]) == {"doctor"}
    assert "Robin" not in repr(log)  # the values of PHI fields are redacted in the log
    review = next(df for df in frames(at) if "PHI reads" in df.columns)
    (reader,) = review[review["Reader"] == doctor[0]].to_dict("records")
    assert (reader["Role"], reader["Patients read"]) == ("doctor", 1)

    at = at.button(key="audit.verify").click().run()
    assert not at.exception
    assert "The chain is intact" in texts(at)


@pytest.mark.parametrize("file", ADMIN_PAGES)
def test_a_doctor_opening_an_admin_page_by_its_url_is_stopped(
    file: str, portal_stack: PortalUiStack, doctor: tuple[str, str]
) -> None:
    email, token = doctor
    with ui_environment_for(portal_stack):
        at = page_test(file, token, email=email).run()

    assert not at.exception
    assert [e.value for e in at.error] == [
        "This page is for admins only. Choose a page from the menu."
    ]
    assert not at.dataframe and not at.title


@pytest.mark.parametrize("file", DOCTOR_PAGES)
def test_an_admin_opening_a_doctor_page_by_its_url_is_stopped(
    file: str, portal_stack: PortalUiStack, admin_token: str
) -> None:
    with ui_environment_for(portal_stack):
        at = page_test(file, admin_token, email="admin@demo.clinic").run()

    assert not at.exception
    assert [e.value for e in at.error] == [
        "This page is for doctors only. Choose a page from the menu."
    ]
    assert not at.dataframe and not at.title


def test_the_menus_offer_these_pages_to_their_role_only(
    portal_stack: PortalUiStack, admin_token: str, doctor: tuple[str, str]
) -> None:
    with ui_environment_for(portal_stack):
        as_doctor = app_test(doctor[1], email=doctor[0]).run()
        for file in ADMIN_PAGES:
            with pytest.raises(ValueError):
                open_page(as_doctor, file)
        for file in DOCTOR_PAGES:
            assert not open_page(as_doctor, file).exception
        as_admin = app_test(admin_token, email="admin@demo.clinic").run()
        for file in DOCTOR_PAGES:
            with pytest.raises(ValueError):
                open_page(as_admin, file)
        for file in ADMIN_PAGES:
            assert not open_page(as_admin, file).exception
