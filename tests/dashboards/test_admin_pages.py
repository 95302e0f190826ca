"""The admin pages' logic, in AppTest, against the live API and the marts of `portal_stack`:
what each page shows for the known analytics history, and each write it makes through the API
(checked through the API afterwards), with API problems shown in plain words."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.fixtures.portal_ui import (
    PortalUiStack,
    app_test,
    open_page,
    staff_token,
    texts,
    ui_environment_for,
)


@pytest.fixture(scope="module")
def admin_api(portal_stack: PortalUiStack) -> Iterator[httpx.Client]:
    with portal_stack.client(staff_token(portal_stack, "admin")) as client:
        yield client


def admin_page(stack: PortalUiStack, file: str) -> Any:
    with ui_environment_for(stack, CLINIC_TIME_ZONE="UTC"):
        at = app_test(staff_token(stack, "admin")).run()
        at = open_page(at, file)
    assert not at.exception, at.exception
    return at


def rerun(stack: PortalUiStack, at: Any) -> Any:
    with ui_environment_for(stack, CLINIC_TIME_ZONE="UTC"):
        at = at.run()
    assert not at.exception, at.exception
    return at


def click(stack: PortalUiStack, at: Any, label: str) -> Any:
    (button,) = [b for b in at.button if b.label == label]
    with ui_environment_for(stack, CLINIC_TIME_ZONE="UTC"):
        at = button.click().run()
    assert not at.exception, at.exception
    return at


def frame(at: Any, *columns: str) -> Any:
    """The first table that has these columns."""
    for table in at.dataframe:
        if set(columns) <= set(table.value.columns):
            return table.value
    raise AssertionError(
        f"no table with {columns}; tables: {[list(t.value) for t in at.dataframe]}"
    )


def metric(at: Any, label: str) -> str:
    (value,) = [m.value for m in at.metric if m.label == label]
    return str(value)


def new_product(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {
        "sku": f"UI-{uuid.uuid4().hex[:8]}",
        "name": "Nitrile gloves (100)",
        "price_cents": 1299,
    }
    response = api.post("/products", json={**body, **fields})
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


def test_overview_shows_the_marts_numbers_for_the_range(
    portal_stack: PortalUiStack, history: Any
) -> None:
    at = admin_page(portal_stack, "admin/overview.py")
    # The history's payments in the last 30 days: 75 + 25 + 50 USD gross, 10 + 25 refunded.
    assert metric(at, "Gross revenue") == "$150.00"
    assert metric(at, "Refunds") == "$35.00"
    assert metric(at, "Net revenue") == "$115.00"
    revenue = frame(at, "Gross", "Refunds", "Net")
    assert revenue["Net"].tolist().count("-$25.00") == 1
    status = frame(at, "Status", "Orders", "Value")
    assert set(status["Status"]) <= {"pending", "paid", "fulfilled", "cancelled"}
    fulfilment = frame(at, "Step", "p50", "p90", "p99")
    assert fulfilment["Step"].tolist() == [
        "Created to paid",
        "Paid to fulfilled",
        "Created to fulfilled",
    ]
    expiring = frame(at, "SKU", "State", "Units on hand")
    assert set(expiring["State"]) <= {"expiring within 30 days", "expired, still on hand"}
    shown = texts(at)
    assert "No open exception: Stripe agrees." in shown
    assert "Pipeline health is not configured" in shown
    # A shorter range leaves out the payments of ten days ago.
    at.selectbox(key="overview.preset").select("Last 7 days")
    at = rerun(portal_stack, at)
    assert metric(at, "Gross revenue") == "$75.00"


def test_inventory_receives_adjusts_and_quarantines_through_the_api(
    portal_stack: PortalUiStack, admin_api: httpx.Client
) -> None:
    product = new_product(admin_api, perishable=True, par_level=5, reorder_quantity=20)
    at = admin_page(portal_stack, "admin/inventory.py")
    at.text_input(key="inv.q").input(product["sku"])
    at = rerun(portal_stack, at)
    assert frame(at, "SKU", "Available")["SKU"].tolist() == [product["sku"]]

    lot_number = f"L-{uuid.uuid4().hex[:6]}"
    at.text_input(key="inv.receive.lot").input(lot_number)
    at.number_input(key="inv.receive.qty").set_value(40)
    at = click(portal_stack, at, "Receive lot")
    assert f"Received lot {lot_number}: 40 units" in texts(at)
    lots = admin_api.get(f"/products/{product['id']}/lots").json()["items"]
    assert [(lot["lot_number"], lot["quantity_on_hand"]) for lot in lots] == [(lot_number, 40)]

    # The same lot number again: the API's problem, in its own words.
    at.text_input(key="inv.receive.lot").input(lot_number)
    at = click(portal_stack, at, "Receive lot")
    assert any("Already exists" in e.value for e in at.error), texts(at)

    at.number_input(key="inv.adjust.delta").set_value(-3)
    at.selectbox(key="inv.adjust.reason").select("damaged")
    at = click(portal_stack, at, "Record adjustment")
    assert f"Lot {lot_number}: -3 units (damaged)." in texts(at)
    lot = admin_api.get(f"/lots/{lots[0]['id']}").json()
    assert lot["quantity_on_hand"] == 37

    # A direction the reason forbids is refused by the API, and nothing changes.
    at.number_input(key="inv.adjust.delta").set_value(5)
    at.selectbox(key="inv.adjust.reason").select("damaged")
    at = click(portal_stack, at, "Record adjustment")
    assert any("must be negative" in e.value for e in at.error), texts(at)
    assert admin_api.get(f"/lots/{lots[0]['id']}").json()["quantity_on_hand"] == 37

    # Quarantine needs a reason and a second click.
    at.selectbox(key="inv.status.target").select("quarantined")
    at.text_input(key="inv.status.reason").input("Cold chain broken in transit")
    at = rerun(portal_stack, at)
    at = click(portal_stack, at, "Quarantine")
    assert admin_api.get(f"/lots/{lots[0]['id']}").json()["status"] == "available"
    assert any("will not be sold until released" in w.value for w in at.warning)
    at = click(portal_stack, at, "Yes, quarantine")
    assert f"Lot {lot_number} is now quarantined." in texts(at)
    lot = admin_api.get(f"/lots/{lots[0]['id']}").json()
    assert (lot["status"], lot["status_reason"]) == ("quarantined", "Cold chain broken in transit")

    pid = product["id"]
    at.number_input(key=f"inv.par.level.{pid}").set_value(12)
    at.number_input(key=f"inv.par.reorder.{pid}").set_value(48)
    at = click(portal_stack, at, "Save par level")
    saved = admin_api.get(f"/products/{pid}").json()
    assert (saved["par_level"], saved["reorder_quantity"]) == (12, 48)
    # Quarantined stock is not sellable: the product is now under par, with a suggestion.
    assert product["sku"] in " ".join(frame(at, "Suggested order")["SKU"])


def test_products_create_edit_and_archive(
    portal_stack: PortalUiStack, admin_api: httpx.Client
) -> None:
    at = admin_page(portal_stack, "admin/products.py")
    sku = f"UI-NEW-{uuid.uuid4().hex[:6]}"
    at.text_input(key="products.new.sku").input(sku)
    at.text_input(key="products.new.name").input("Sterile saline 10 ml")
    at.number_input(key="products.new.price").set_value(4.5)
    at.checkbox(key="products.new.per").check()
    at = click(portal_stack, at, "Create product")
    assert f"Created Sterile saline 10 ml ({sku})." in texts(at)
    (created,) = admin_api.get("/products", params={"q": sku}).json()["items"]
    assert (created["price_cents"], created["perishable"]) == (450, True)

    # The same SKU again: the API's problem in plain words, nothing created.
    at.text_input(key="products.new.sku").input(sku)
    at.text_input(key="products.new.name").input("Duplicate")
    at = click(portal_stack, at, "Create product")
    assert any("Already exists" in e.value for e in at.error), texts(at)
    assert len(admin_api.get("/products", params={"q": sku}).json()["items"]) == 1

    at.text_input(key="products.q").input(sku)
    at = rerun(portal_stack, at)
    assert frame(at, "SKU", "Price")["Price"].tolist() == ["$4.50"]
    price = [
        n for n in at.number_input if n.label == "Price (USD)" and n.key != "products.new.price"
    ]
    price[0].set_value(5.25)
    at = click(portal_stack, at, "Save changes")
    assert "price_cents changed" in texts(at)
    assert admin_api.get(f"/products/{created['id']}").json()["price_cents"] == 525

    at = click(portal_stack, at, "Archive product")
    assert admin_api.get(f"/products/{created['id']}").status_code == 200  # not yet
    at = click(portal_stack, at, "Yes, archive product")
    # It never had stock: deleted rather than archived.
    assert "Sterile saline 10 ml was deleted." in texts(at)
    assert admin_api.get(f"/products/{created['id']}").status_code == 404


def test_system_logs_lists_the_api_records_with_filters(portal_stack: PortalUiStack) -> None:
    marker = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    with psycopg.connect(portal_stack.database.owner_url) as conn:
        for level, source, minutes, message in (
            ("WARNING", "api", 5, f"pharmacy slow {marker}"),
            ("ERROR", "worker", 4, f"e-mail delivery failed {marker}"),
            ("ERROR", "pipelines", 60 * 24 * 3, f"dbt run failed {marker}"),
        ):
            conn.execute(
                "INSERT INTO system_log (created_at, level, source, logger, message, exception)"
                " VALUES (%s, %s, %s, 'app.x', %s, %s)",
                (
                    now - timedelta(minutes=minutes),
                    level,
                    source,
                    message,
                    "Traceback (most recent call last):\nRuntimeError: boom"
                    if level == "ERROR"
                    else None,
                ),
            )
    at = admin_page(portal_stack, "admin/system_logs.py")
    messages = frame(at, "Level", "Message")["Message"].tolist()
    assert f"e-mail delivery failed {marker}" in messages
    assert f"pharmacy slow {marker}" in messages
    assert f"dbt run failed {marker}" in messages  # within the last 7 days
    at.selectbox(key="logs.level").select("ERROR")
    at.selectbox(key="logs.source").select("worker")
    at = rerun(portal_stack, at)
    assert frame(at, "Level", "Message")["Message"].tolist() == [f"e-mail delivery failed {marker}"]
    assert "RuntimeError: boom" in at.code[0].value
    at.selectbox(key="logs.source").select("pipelines")
    at.selectbox(key="logs.days").select(1)
    at = rerun(portal_stack, at)
    assert "No warning or error in this period." in texts(at)


def test_exports_shows_the_monthly_metrics(portal_stack: PortalUiStack) -> None:
    at = admin_page(portal_stack, "admin/exports.py")
    months = frame(at, "Month", "Gross", "Net")
    assert len(months) >= 1
    assert all(m.count("-") == 1 and len(m) == 7 for m in months["Month"])
    assert all(v.startswith(("$", "-$", "—")) for v in months["Gross"])
    assert "no patient appears in any export" in texts(at)


def test_doctor_inventory_is_read_only(portal_stack: PortalUiStack) -> None:
    with ui_environment_for(portal_stack):
        at = app_test(staff_token(portal_stack, "doctor")).run()
        at = open_page(at, "doctor/inventory.py")
    assert not at.exception
    table = frame(at, "SKU", "Available")
    assert "ANL-X" in table["SKU"].tolist()
    assert [b.label for b in at.button] == ["Sign out"]  # nothing to change
    assert not at.get("form")
