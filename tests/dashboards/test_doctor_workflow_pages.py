"""The doctor's pages against the live API (AppTest, signed in with a real token of the
development provider): add and correct a patient, place an order and get its payment link,
follow, edit and cancel it. Each test checks through the API what the page did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.fixtures.portal_orders import (
    answer,
    new_order,
    new_patient,
    pages_as_the_app_sees_them,
    stocked_product,
)
from tests.fixtures.portal_ui import (
    PortalUiStack,
    add_staff,
    new_email,
    page_test,
    staff_token,
    texts,
    ui_environment_for,
)


@pytest.fixture(scope="module", autouse=True)
def _streamlit_pages_decided_by_the_app() -> None:
    pages_as_the_app_sees_them()


@pytest.fixture(scope="module")
def doctor_email(portal_stack: PortalUiStack) -> str:
    """A doctor of this module's own, so its patients and orders are the tests' alone."""
    email = new_email("dr-pages")
    add_staff(portal_stack.issuer, email, "doctor")
    return email


@pytest.fixture(scope="module")
def doctor_token(portal_stack: PortalUiStack, doctor_email: str) -> str:
    return staff_token(portal_stack, "doctor", doctor_email)


@pytest.fixture(scope="module")
def doctor_api(portal_stack: PortalUiStack, doctor_token: str) -> Iterator[httpx.Client]:
    with portal_stack.client(doctor_token) as client:
        yield client


@pytest.fixture(scope="module")
def admin_api(portal_stack: PortalUiStack) -> Iterator[httpx.Client]:
    with portal_stack.client(staff_token(portal_stack, "admin")) as client:
        yield client


@pytest.fixture
def run_page(portal_stack: PortalUiStack, doctor_token: str, doctor_email: str) -> Iterator[Any]:
    """`run_page("doctor/patients.py")` -> the page, run once as this module's doctor."""
    with ui_environment_for(portal_stack):
        yield lambda file: page_test(file, doctor_token, email=doctor_email).run()


def table(at: Any, index: int = 0) -> pd.DataFrame:
    frame: pd.DataFrame = at.dataframe[index].value
    return frame


def option(at: Any, key: str, starting: str) -> str:
    (found,) = [o for o in at.selectbox(key=key).options if o.startswith(starting)]
    return str(found)


def test_my_patients_adds_a_patient_finds_them_and_corrects_their_phone(
    run_page: Any, doctor_api: httpx.Client
) -> None:
    at = run_page("doctor/patients.py")
    assert not at.exception
    at.text_input(key="patients.add.name").input("Morgan Quill")
    at.text_input(key="patients.add.email").input("morgan.quill@example.org")
    at.text_input(key="patients.add.phone").input("+1 555 010 0177")
    at.date_input(key="patients.add.born").set_value(date(1988, 3, 4))
    at = at.button(key="patients.add.submit").click().run()

    assert not at.exception
    assert "Morgan Quill is added to your patients." in texts(at)
    assert "Morgan Quill" in set(table(at)["Name"])
    # Search narrows the table (by part of the e-mail, case ignored).
    new_patient(doctor_api, name="Avery Stone")
    at = at.text_input(key="patients.search").input("MORGAN.Q").run()
    assert list(table(at)["Name"]) == ["Morgan Quill"]

    label = option(at, "patients.edit", "Morgan Quill")
    at = at.selectbox(key="patients.edit").select(label).run()
    (patient,) = [
        p for p in answer(doctor_api.get("/patients"))["items"] if p["name"] == "Morgan Quill"
    ]
    at.text_input(key=f"patients.edit.{patient['id']}.phone").input("+1 555 010 0188")
    at = at.button(key=f"patients.edit.{patient['id']}.submit").click().run()

    assert not at.exception
    assert "Morgan Quill's details are saved." in texts(at)
    assert answer(doctor_api.get(f"/patients/{patient['id']}"))["phone"] == "+1 555 010 0188"


def test_a_duplicate_patient_is_refused_in_plain_words(
    run_page: Any, doctor_api: httpx.Client
) -> None:
    existing = new_patient(doctor_api)
    at = run_page("doctor/patients.py")
    at.text_input(key="patients.add.name").input("Someone Else")
    at.text_input(key="patients.add.email").input(existing["email"])
    at.text_input(key="patients.add.phone").input("+1 555 010 0100")
    at.date_input(key="patients.add.born").set_value(date(1990, 1, 1))
    at = at.button(key="patients.add.submit").click().run()

    assert not at.exception
    (error,) = at.error
    assert "Already exists" in error.value
    assert "already has a patient with that e-mail" in error.value


def test_new_order_places_the_order_shows_its_link_and_emails_a_new_one(
    run_page: Any, doctor_api: httpx.Client, admin_api: httpx.Client, portal_stack: PortalUiStack
) -> None:
    product = stocked_product(admin_api, quantity=5)
    patient = new_patient(doctor_api)
    at = run_page("doctor/new_order.py")
    assert not at.exception
    at = (
        at.selectbox(key="new_order.patient")
        .select(option(at, "new_order.patient", patient["name"]))
        .run()
    )
    at = at.multiselect(key="new_order.items").select(f"{product['name']} ({product['sku']})").run()
    at = at.number_input(key=f"new_order.quantity.{product['id']}").set_value(2).run()
    assert at.metric[0].value == "$25.00"
    at = at.button(key="new_order.submit").click().run()

    assert not at.exception
    (order,) = answer(doctor_api.get("/orders", params={"patient_id": patient["id"]}))["items"]
    assert (order["status"], order["total_cents"]) == ("pending", 2500)
    assert f"Order {order['id'][:8].upper()} is placed for $25.00" in texts(at)
    first_link = at.code[0].value
    assert first_link.startswith(f"{portal_stack.api}/pay/")
    assert answer(doctor_api.get(f"/products/{product['id']}"))["quantity_available"] == 3

    at = at.button(key=f"new_order.email.{order['id']}").click().run()
    at = at.button(key=f"new_order.email.{order['id']}.yes").click().run()

    assert not at.exception
    assert "A new payment link was e-mailed to the patient" in texts(at)
    assert at.code[0].value != first_link and at.code[0].value.startswith(portal_stack.api)
    timeline = answer(doctor_api.get(f"/orders/{order['id']}/timeline"))
    assert [e["event"] for e in timeline["events"]] == ["created", "link_sent", "link_sent"]


def test_new_order_shows_the_apis_problem_when_stock_runs_out(
    run_page: Any, doctor_api: httpx.Client, admin_api: httpx.Client
) -> None:
    product = stocked_product(admin_api, quantity=0)
    patient = new_patient(doctor_api)
    at = run_page("doctor/new_order.py")
    at = (
        at.selectbox(key="new_order.patient")
        .select(option(at, "new_order.patient", patient["name"]))
        .run()
    )
    at = at.multiselect(key="new_order.items").select(f"{product['name']} ({product['sku']})").run()
    assert f"{product['sku']} is out of stock now." in texts(at)
    at = at.button(key="new_order.submit").click().run()

    assert not at.exception
    (error,) = at.error
    assert "stock" in error.value.lower() and product["sku"] in error.value
    assert answer(doctor_api.get("/orders", params={"patient_id": patient["id"]}))["items"] == []


def test_my_orders_shows_states_and_timeline_then_edits_and_cancels_a_pending_order(
    run_page: Any, doctor_api: httpx.Client, admin_api: httpx.Client
) -> None:
    product = stocked_product(admin_api, quantity=10)
    patient = new_patient(doctor_api)
    order = new_order(doctor_api, patient, product, quantity=1)
    reference = order["id"][:8].upper()
    at = run_page("doctor/orders.py")
    assert not at.exception
    rows = table(at)
    mine = rows[rows["Reference"] == reference].iloc[0]
    assert (mine["Status"], mine["Payment"], mine["Patient"]) == (
        "pending",
        "not started",
        patient["name"],
    )

    at = (
        at.selectbox(key="my_orders.chosen").select(option(at, "my_orders.chosen", reference)).run()
    )
    assert not at.exception
    timeline = next(df for df in (e.value for e in at.dataframe) if "What" in df.columns)
    assert timeline["What"].iloc[0] == "Order created for 12.50 USD"

    at.number_input(key=f"my_orders.edit.{order['id']}.{product['id']}").set_value(3)
    at = at.button(key=f"my_orders.edit_save.{order['id']}").click().run()
    assert not at.exception
    assert f"Order {reference} now has the new quantities." in texts(at)
    assert answer(doctor_api.get(f"/orders/{order['id']}"))["items"][0]["quantity"] == 3

    at.selectbox(key=f"my_orders.cancel_reason.{order['id']}").select("duplicate_order")
    at = at.button(key=f"my_orders.cancel.{order['id']}").click().run()
    assert "Its stock is released" in texts(at)  # asked before anything happens
    assert answer(doctor_api.get(f"/orders/{order['id']}"))["status"] == "pending"
    at = at.button(key=f"my_orders.cancel.{order['id']}.yes").click().run()

    assert not at.exception
    assert f"Order {reference} is cancelled." in texts(at)
    cancelled = answer(doctor_api.get(f"/orders/{order['id']}"))
    assert (cancelled["status"], cancelled["cancellation_reason"]) == (
        "cancelled",
        "duplicate_order",
    )
