"""The stock conditions: low stock counts sellable units only, with days of cover and what to
reorder; lots expiring within the warning window; products whose only stock is expired."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text, update
from sqlalchemy.orm import Session

from app.actor import Actor
from app.alerts.service import Condition
from app.inventory.alerts import current_stock_conditions, days_of_cover
from app.inventory.flows import check_stock_alerts
from app.inventory.repository import today
from app.models import Order
from app.models.base import utcnow
from app.models.status import AlertTopic
from tests.fixtures.alerts import alert_rows, write_off
from tests.fixtures.catalog import create_product, insert_lot, receive_lot, reserve
from tests.fixtures.orders import pay, place_order, set_lot_status
from tests.fixtures.patients import Headers, create_patient
from tests.fixtures.settings import settings_env


def conditions(db: Session, **kwargs: Any) -> dict[str, Condition]:
    return {c.key: c for c in current_stock_conditions(db, today=today(), **kwargs)}


def test_low_stock_counts_only_sellable_units_and_says_what_to_reorder(
    client: TestClient, db: Session, admin: Headers
) -> None:
    day = today()
    product = create_product(client, admin, par_level=10, reorder_quantity=12)
    pid = product["id"]
    receive_lot(client, admin, pid, quantity=4, expiration_date=day + timedelta(days=60))
    reserved = receive_lot(client, admin, pid, quantity=7, expiration_date=day + timedelta(90))
    reserve(db, reserved["id"], 2)
    quarantined = receive_lot(client, admin, pid, quantity=50)
    set_lot_status(client, admin, quarantined["id"], "quarantined")
    recalled = receive_lot(client, admin, pid, quantity=60)
    set_lot_status(client, admin, recalled["id"], "recalled")
    insert_lot(db, pid, quantity=30, expiration_date=day - timedelta(days=1))  # past its date

    found = conditions(db)

    low = found[f"low-stock:{pid}"]
    assert low.details["sellable"] == 4 + (7 - 2)
    assert low.details["par_level"] == 10
    assert low.details["reorder_quantity"] == 12
    assert low.details["suggested_order_quantity"] == 12  # 2 to get above par: one case
    assert (low.details["units_sold_30_days"], low.details["days_of_cover"]) == (0, None)
    assert low.summary.startswith("Low stock: 9 sellable, par 10, no sales in 30 days;")
    assert product["sku"] in low.summary
    assert f"expired-only:{pid}" not in found  # sellable stock is left


def test_at_par_is_low_one_above_is_not_and_par_zero_or_archived_never_are(
    client: TestClient, db: Session, admin: Headers
) -> None:
    at_par = create_product(client, admin, par_level=5)
    above = create_product(client, admin, par_level=5)
    no_par = create_product(client, admin, par_level=0)
    archived = create_product(client, admin, par_level=5)
    receive_lot(client, admin, at_par["id"], quantity=5)
    receive_lot(client, admin, above["id"], quantity=6)
    response = client.patch(
        f"/api/v1/products/{archived['id']}", json={"active": False}, headers=admin
    )
    assert response.status_code == 200, response.text

    keys = set(conditions(db))

    assert f"low-stock:{at_par['id']}" in keys
    assert not {f"low-stock:{p['id']}" for p in (above, no_par, archived)} & keys


def test_days_of_cover_come_from_the_last_30_days_of_paid_and_fulfilled_sales(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    product = create_product(client, admin, par_level=120, reorder_quantity=50)
    pid = product["id"]
    receive_lot(client, admin, pid, quantity=200)
    patient = create_patient(client, doctor)
    paid = [place_order(client, doctor, patient["id"], (pid, units)) for units in (20, 10)]
    for order in paid:
        pay(db, order["id"])
    response = client.post(f"/api/v1/orders/{paid[1]['id']}/fulfil", headers=admin)
    assert response.status_code == 200, response.text
    old = place_order(client, doctor, patient["id"], (pid, 50))
    pay(db, old["id"])
    db.execute(
        update(Order)
        .where(Order.id == uuid.UUID(old["id"]))
        .values(paid_at=utcnow() - timedelta(days=30))
    )
    place_order(client, doctor, patient["id"], (pid, 5))  # pending: not sold
    cancelled = place_order(client, doctor, patient["id"], (pid, 7))
    pay(db, cancelled["id"])
    response = client.post(
        f"/api/v1/orders/{cancelled['id']}/cancel",
        json={"reason": "patient_request"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    db.commit()

    low = conditions(db)[f"low-stock:{pid}"]

    # 200 received; 10 shipped; 20 + 50 paid and 5 pending reserved; 7 released: 115 sellable.
    assert low.details["sellable"] == 115
    assert low.details["units_sold_30_days"] == 30  # the 20 paid and the 10 fulfilled
    assert low.details["units_per_day"] == 1.0
    assert low.details["days_of_cover"] == 115.0
    assert "115 days of cover at 1/day" in low.summary
    assert low.details["suggested_order_quantity"] == 50


def test_days_of_cover_arithmetic() -> None:
    assert days_of_cover(10, 0) == (0.0, None)
    assert days_of_cover(10, 60) == (2.0, 5.0)
    assert days_of_cover(0, 30) == (1.0, 0.0)
    assert days_of_cover(7, 9) == (0.3, 23.3)


def test_lots_expiring_within_the_window_that_hold_stock_are_reported(
    client: TestClient, db: Session, admin: Headers
) -> None:
    day = today()
    product = create_product(client, admin, par_level=0)
    pid = product["id"]
    soon = receive_lot(client, admin, pid, quantity=8, expiration_date=day + timedelta(days=10))
    edge = receive_lot(client, admin, pid, quantity=1, expiration_date=day + timedelta(days=30))
    later = receive_lot(client, admin, pid, quantity=9, expiration_date=day + timedelta(days=31))
    held = receive_lot(client, admin, pid, quantity=3, expiration_date=day + timedelta(days=5))
    set_lot_status(client, admin, held["id"], "quarantined")
    recalled = receive_lot(client, admin, pid, quantity=3, expiration_date=day + timedelta(5))
    set_lot_status(client, admin, recalled["id"], "recalled")
    empty = insert_lot(db, pid, quantity=2, expiration_date=day + timedelta(days=3))
    write_off(client, admin, empty.id, 2)
    today_lot = insert_lot(db, pid, quantity=2, expiration_date=day)
    gone = insert_lot(db, pid, quantity=2, expiration_date=day - timedelta(days=1))

    found = conditions(db)

    expiring = {key for key in found if key.startswith("expiring:")}
    assert expiring == {
        f"expiring:{lot_id}" for lot_id in (soon["id"], edge["id"], held["id"], today_lot.id)
    }
    assert f"expiring:{later['id']}" not in found
    assert not {f"expiring:{x}" for x in (recalled["id"], empty.id, gone.id)} & set(found)
    first = found[f"expiring:{soon['id']}"]
    assert first.details["days_left"] == 10
    assert first.details["quantity_on_hand"] == 8
    assert "in 10 days" in first.summary and soon["lot_number"] in first.summary
    assert "(quarantined)" in found[f"expiring:{held['id']}"].summary
    assert "(today)" in found[f"expiring:{today_lot.id}"].summary
    # In time order, soonest first.
    ordered = [k for k in found if k.startswith("expiring:")]
    assert ordered[0] == f"expiring:{today_lot.id}"


def test_the_expiry_window_is_a_setting(client: TestClient, db: Session, admin: Headers) -> None:
    product = create_product(client, admin)
    lot = receive_lot(client, admin, product["id"], expiration_date=today() + timedelta(days=10))
    key = f"expiring:{lot['id']}"

    with settings_env(STOCK_EXPIRY_WARNING_DAYS="9"):
        assert key not in conditions(db)
    with settings_env(STOCK_EXPIRY_WARNING_DAYS="10"):
        assert key in conditions(db)
    assert key not in conditions(db, expiry_warning_days=3)


def test_a_product_whose_only_stock_is_expired_is_reported(
    client: TestClient, db: Session, admin: Headers
) -> None:
    day = today()
    only_expired = create_product(client, admin, par_level=0)
    insert_lot(db, only_expired["id"], quantity=4, expiration_date=day - timedelta(days=3))
    insert_lot(db, only_expired["id"], quantity=6, expiration_date=day - timedelta(days=1))
    emptied = receive_lot(client, admin, only_expired["id"], expiration_date=day + timedelta(200))
    write_off(client, admin, emptied["id"], emptied["quantity_on_hand"])
    marked = create_product(client, admin, par_level=0)
    lot = receive_lot(client, admin, marked["id"], expiration_date=day + timedelta(days=90))
    set_lot_status(client, admin, lot["id"], "expired")  # marked expired before its date
    mixed = create_product(client, admin, par_level=0)
    insert_lot(db, mixed["id"], quantity=4, expiration_date=day - timedelta(days=3))
    receive_lot(client, admin, mixed["id"], quantity=1)
    nothing = create_product(client, admin, par_level=0)

    found = conditions(db)

    report = found[f"expired-only:{only_expired['id']}"]
    assert (report.details["expired_units"], report.details["expired_lots"]) == (10, 2)
    assert report.details["latest_expiration_date"] == day - timedelta(days=1)
    assert "10 units in 2 expired lot(s)" in report.summary
    assert f"expired-only:{marked['id']}" in found
    assert f"expired-only:{mixed['id']}" not in found
    assert f"expired-only:{nothing['id']}" not in found


def test_keys_are_stable_and_names_with_line_breaks_become_one_line(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, par_level=3, name="Saline\n0.9 %\tbag " + "x" * 180)

    first, second = conditions(db), conditions(db)

    assert list(first) == list(second) == [f"low-stock:{product['id']}"]
    summary = first[f"low-stock:{product['id']}"].summary
    assert "\n" not in summary and "\t" not in summary and len(summary) <= 300
    assert "Saline 0.9 % bag" in summary


def test_the_sweep_is_two_queries_whatever_the_number_of_products(
    client: TestClient, db: Session, admin: Headers
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        if not args[2].startswith(("SAVEPOINT", "RELEASE")):
            statements.append(args[2])

    for _ in range(5):
        product = create_product(client, admin, par_level=3)
        insert_lot(db, product["id"], quantity=1, expiration_date=today() + timedelta(days=2))
    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        found = current_stock_conditions(db, today=today())
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert len(found) == 10
    assert len(statements) == 2


def test_check_stock_alerts_opens_clears_and_audits_what_changed(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, par_level=5, reorder_quantity=10)
    actor = Actor.system("stock-alerts")

    first = check_stock_alerts(db, actor)
    assert (first.opened, first.cleared) == (1, 0)
    assert check_stock_alerts(db, actor).still_open == 1
    receive_lot(client, admin, product["id"], quantity=20)
    cleared = check_stock_alerts(db, actor)
    assert (cleared.opened, cleared.cleared, cleared.still_open) == (0, 1, 0)
    db.commit()  # audit rows are written at the commit

    rows = alert_rows(db, AlertTopic.STOCK, f"low-stock:{product['id']}")
    assert len(rows) == 1 and rows[0].cleared_at is not None
    audited = db.execute(
        text(
            "SELECT after FROM audit_log WHERE action = 'alerts.synced' AND actor_subject = :s"
            " ORDER BY id"
        ),
        {"s": actor.subject},
    ).all()
    assert [(a.after["opened"], a.after["cleared"]) for a in audited] == [(1, 0), (0, 1)]


@pytest.mark.parametrize("days", [0, 45])
def test_the_sweep_can_be_run_for_another_day(
    client: TestClient, db: Session, admin: Headers, days: int
) -> None:
    product = create_product(client, admin, par_level=0)
    lot = receive_lot(client, admin, product["id"], expiration_date=today() + timedelta(days=40))

    result = check_stock_alerts(db, Actor.system("t"), today=today() + timedelta(days=days))

    rows = alert_rows(db, AlertTopic.STOCK)
    keys = {row.key for row in rows}
    if days == 0:
        assert result.opened == 0 and keys == set()
    else:  # 45 days on, the lot is past its date and the product holds only expired stock
        assert keys == {f"expired-only:{product['id']}"}
        assert f"expiring:{lot['id']}" not in keys
