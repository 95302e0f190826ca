"""Admin CRUD on the catalog, what doctors may see, pagination, and the audit trail."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.inventory.repository import today
from tests.fixtures.catalog import (
    PRODUCTS,
    audit_entries,
    create_product,
    insert_lot,
    product_body,
    receive_lot,
    reserve,
)
from tests.fixtures.problems import assert_problem

Headers = dict[str, str]


# -- create / read / update --------------------------------------------------------------------


def test_admin_creates_product_and_gets_it_back_with_every_field(
    client: TestClient, admin: Headers
) -> None:
    body = product_body(sku="AMOX-500", par_level=12, reorder_quantity=48, perishable=True)

    created = client.post(PRODUCTS, json=body, headers=admin)

    assert created.status_code == 201, created.text
    product = created.json()
    for field, value in body.items():
        assert product[field] == value, field
    assert product["currency"] == "usd"
    assert product["active"] is True
    assert product["quantity_available"] == 0
    uuid.UUID(product["id"])
    fetched = client.get(f"{PRODUCTS}/{product['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.json() == product


def test_product_create_writes_audit_row_with_actor_and_after_state(
    client: TestClient, db: Session, auth
) -> None:
    headers = auth("admin", sub="admin-audit-create")
    product = create_product(client, headers, sku="AUD-1", price_cents=500)

    (entry,) = audit_entries(db, product["id"])
    assert entry.action == "product.created"
    assert entry.entity_type == "product"
    assert entry.actor_subject == "admin-audit-create"
    assert entry.actor_role == "admin"
    assert entry.before is None
    assert entry.after is not None
    assert entry.after["sku"] == "AUD-1"
    assert entry.after["price_cents"] == 500
    assert entry.after["active"] is True


def test_admin_patch_changes_only_given_fields_and_audits_before_and_after(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, name="Old name", price_cents=1000, par_level=5)

    response = client.patch(
        f"{PRODUCTS}/{product['id']}",
        json={"name": "New name", "price_cents": 1250},
        headers=admin,
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "New name"
    assert updated["price_cents"] == 1250
    assert updated["par_level"] == 5
    assert updated["sku"] == product["sku"]
    assert client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()["name"] == "New name"
    entries = audit_entries(db, product["id"])
    assert [e.action for e in entries] == ["product.created", "product.updated"]
    update = entries[-1]
    assert update.actor_subject == "admin-main"
    assert update.before is not None and update.after is not None
    assert (update.before["name"], update.after["name"]) == ("Old name", "New name")
    assert (update.before["price_cents"], update.after["price_cents"]) == (1000, 1250)
    assert update.before["par_level"] == update.after["par_level"] == 5


def test_patch_that_changes_nothing_writes_no_audit_row(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, name="Same")

    response = client.patch(f"{PRODUCTS}/{product['id']}", json={"name": "Same"}, headers=admin)

    assert response.status_code == 200
    assert [e.action for e in audit_entries(db, product["id"])] == ["product.created"]


def test_duplicate_sku_on_create_is_409_duplicate(client: TestClient, admin: Headers) -> None:
    create_product(client, admin, sku="DUP-1")

    response = client.post(PRODUCTS, json=product_body(sku="DUP-1"), headers=admin)

    body = assert_problem(response, 409, "/problems/duplicate")
    assert body["field"] == "sku"


def test_patch_to_another_products_sku_is_409_duplicate(
    client: TestClient, db: Session, admin: Headers
) -> None:
    create_product(client, admin, sku="TAKEN-1")
    other = create_product(client, admin, sku="FREE-1")

    response = client.patch(f"{PRODUCTS}/{other['id']}", json={"sku": "TAKEN-1"}, headers=admin)

    assert_problem(response, 409, "/problems/duplicate")
    assert client.get(f"{PRODUCTS}/{other['id']}", headers=admin).json()["sku"] == "FREE-1"
    assert [e.action for e in audit_entries(db, other["id"])] == ["product.created"]


# -- roles ---------------------------------------------------------------------------------------


def test_doctor_may_list_and_get_active_products(
    client: TestClient, admin: Headers, doctor: Headers
) -> None:
    product = create_product(client, admin)

    listed = client.get(PRODUCTS, headers=doctor)
    fetched = client.get(f"{PRODUCTS}/{product['id']}", headers=doctor)

    assert listed.status_code == 200
    assert product["id"] in [p["id"] for p in listed.json()["items"]]
    assert fetched.status_code == 200
    assert fetched.json()["sku"] == product["sku"]


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "collection"), ("PATCH", "item"), ("DELETE", "item")],
)
def test_doctor_may_not_write_products(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, method: str, target: str
) -> None:
    product = create_product(client, admin, name="Untouched")
    url = PRODUCTS if target == "collection" else f"{PRODUCTS}/{product['id']}"
    body = {"name": "Changed"} if method == "PATCH" else None
    if method == "POST":
        body = product_body()

    response = client.request(method, url, json=body, headers=doctor)

    assert_problem(response, 403, "/problems/forbidden")
    assert client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()["name"] == "Untouched"
    assert [e.action for e in audit_entries(db, product["id"])] == ["product.created"]
    if method == "POST":
        assert body is not None
        listed = client.get(PRODUCTS, params={"q": body["sku"]}, headers=admin).json()
        assert listed["items"] == []


def test_doctor_does_not_see_archived_products(
    client: TestClient, admin: Headers, doctor: Headers
) -> None:
    archived = create_product(client, admin, sku="ARCH-1")
    visible = create_product(client, admin, sku="ARCH-2")
    receive_lot(client, admin, archived["id"])
    assert client.delete(f"{PRODUCTS}/{archived['id']}", headers=admin).json()["outcome"] == (
        "archived"
    )
    mine = {"q": "ARCH-"}

    doctor_list = client.get(PRODUCTS, params=mine, headers=doctor).json()["items"]
    doctor_get = client.get(f"{PRODUCTS}/{archived['id']}", headers=doctor)
    admin_get = client.get(f"{PRODUCTS}/{archived['id']}", headers=admin)
    admin_list = client.get(PRODUCTS, params=mine, headers=admin).json()["items"]

    assert [p["id"] for p in doctor_list] == [visible["id"]]
    assert_problem(doctor_get, 404, "/problems/not-found")
    assert admin_get.status_code == 200
    assert admin_get.json()["active"] is False
    assert {p["id"] for p in admin_list} == {archived["id"], visible["id"]}


def test_doctor_cannot_list_archived_products_by_asking_for_them(
    client: TestClient, admin: Headers, doctor: Headers
) -> None:
    product = create_product(client, admin)
    client.patch(f"{PRODUCTS}/{product['id']}", json={"active": False}, headers=admin)
    params = {"active": "false", "q": product["sku"]}

    as_doctor = client.get(PRODUCTS, params=params, headers=doctor).json()
    as_admin = client.get(PRODUCTS, params=params, headers=admin).json()

    assert as_doctor["items"] == []
    assert [p["id"] for p in as_admin["items"]] == [product["id"]]


# -- delete / archive ------------------------------------------------------------------------------


def test_delete_of_product_without_lots_deletes_it_and_audits_before_state(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, sku="GONE-1")

    response = client.delete(f"{PRODUCTS}/{product['id']}", headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == {"id": product["id"], "outcome": "deleted"}
    assert_problem(client.get(f"{PRODUCTS}/{product['id']}", headers=admin), 404)
    entries = audit_entries(db, product["id"])
    assert [e.action for e in entries] == ["product.created", "product.deleted"]
    deleted = entries[-1]
    assert deleted.actor_subject == "admin-main"
    assert deleted.before is not None and deleted.before["sku"] == "GONE-1"
    assert deleted.after is None


def test_delete_of_product_with_a_lot_archives_it_and_keeps_the_lot(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin)
    lot = receive_lot(client, admin, product["id"], quantity=3)

    response = client.delete(f"{PRODUCTS}/{product['id']}", headers=admin)

    assert response.status_code == 200
    assert response.json() == {"id": product["id"], "outcome": "archived"}
    fetched = client.get(f"{PRODUCTS}/{product['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.json()["active"] is False
    assert client.get(f"/api/v1/lots/{lot['id']}", headers=admin).json()["quantity_on_hand"] == 3
    archived = audit_entries(db, product["id"])[-1]
    assert archived.action == "product.archived"
    assert archived.before is not None and archived.after is not None
    assert (archived.before["active"], archived.after["active"]) == (True, False)


def test_archived_product_refuses_new_lots_until_restored(
    client: TestClient, admin: Headers
) -> None:
    product = create_product(client, admin)
    receive_lot(client, admin, product["id"])
    client.delete(f"{PRODUCTS}/{product['id']}", headers=admin)
    url = f"{PRODUCTS}/{product['id']}/lots"

    refused = client.post(url, json={"lot_number": "LATE-1", "quantity": 1}, headers=admin)
    restored = client.patch(f"{PRODUCTS}/{product['id']}", json={"active": True}, headers=admin)
    accepted = client.post(url, json={"lot_number": "LATE-1", "quantity": 1}, headers=admin)

    assert_problem(refused, 409, "/problems/conflict")
    assert restored.json()["active"] is True
    assert accepted.status_code == 201


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_product_id_is_404_problem(client: TestClient, admin: Headers, method: str) -> None:
    missing = uuid.uuid4()
    body = {"name": "x"} if method == "PATCH" else None

    response = client.request(method, f"{PRODUCTS}/{missing}", json=body, headers=admin)

    problem = assert_problem(response, 404, "/problems/not-found")
    assert str(missing) in problem["detail"]


# -- listing ---------------------------------------------------------------------------------------


def test_cursor_pagination_returns_every_product_once_in_sku_order(
    client: TestClient, admin: Headers
) -> None:
    skus = [f"PAGE-{n:02d}" for n in (7, 3, 1, 5, 2, 6, 4)]
    for sku in skus:
        create_product(client, admin, sku=sku)

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3, "q": "PAGE-"}
        if cursor:
            params["cursor"] = cursor
        response = client.get(PRODUCTS, params=params, headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["items"]) <= 3
        seen.extend(p["sku"] for p in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "pagination does not terminate"

    assert seen == sorted(skus)
    assert pages == 3


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        _b64(b"this is not json"),
        _b64(b'{"sku": "P-01"}'),
        _b64(b'["P-01", "P-02"]'),
        _b64(b"[123]"),
        _b64(b"[null]"),
        _b64(b'[["P-01"]]'),
        _b64(b'["P-\\u0000"]'),
    ],
    ids=[
        "garbage",
        "not-json",
        "not-a-list",
        "wrong-length",
        "number",
        "null",
        "nested-list",
        "nul-character",
    ],
)
def test_invalid_cursor_is_400_invalid_cursor(
    client: TestClient, admin: Headers, cursor: str
) -> None:
    response = client.get(PRODUCTS, params={"cursor": cursor}, headers=admin)

    assert_problem(response, 400, "/problems/invalid-cursor")


def test_search_matches_sku_and_name_and_treats_wildcards_literally(
    client: TestClient, admin: Headers
) -> None:
    by_name = create_product(client, admin, sku="S-1", name="Insulin glargine 100%")
    by_sku = create_product(client, admin, sku="INSUL-PEN", name="Pen needles")
    create_product(client, admin, sku="S-3", name="Gauze")

    found = client.get(PRODUCTS, params={"q": "insul"}, headers=admin).json()["items"]
    percent = client.get(PRODUCTS, params={"q": "100%"}, headers=admin).json()["items"]
    wildcard = client.get(PRODUCTS, params={"q": "%"}, headers=admin).json()["items"]

    assert {p["id"] for p in found} == {by_name["id"], by_sku["id"]}
    assert [p["id"] for p in percent] == [by_name["id"]]
    assert [p["id"] for p in wildcard] == [by_name["id"]]


# -- quantity_available ----------------------------------------------------------------------------


def test_quantity_available_counts_available_unexpired_lots_minus_reservations(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin)
    pid = product["id"]
    sellable = receive_lot(client, admin, pid, quantity=10, expiration_date=today() + timedelta(1))
    receive_lot(client, admin, pid, quantity=5)  # undated: sellable
    quarantined = receive_lot(client, admin, pid, quantity=100)
    recalled = receive_lot(client, admin, pid, quantity=200)
    for lot, status in ((quarantined, "quarantined"), (recalled, "recalled")):
        changed = client.post(
            f"/api/v1/lots/{lot['id']}/status",
            json={"status": status, "reason": "QA hold"},
            headers=admin,
        )
        assert changed.status_code == 200, changed.text
    insert_lot(db, pid, quantity=1000, expiration_date=today() - timedelta(days=1))
    insert_lot(db, pid, quantity=7, expiration_date=today())  # expires today: still sellable
    reserve(db, sellable["id"], 4)

    fetched = client.get(f"{PRODUCTS}/{pid}", headers=admin).json()
    listed = client.get(PRODUCTS, params={"q": product["sku"]}, headers=admin).json()["items"]

    expected = (10 - 4) + 5 + 7
    assert fetched["quantity_available"] == expected
    assert [p["quantity_available"] for p in listed] == [expected]


# -- perishable ------------------------------------------------------------------------------------


def test_making_product_perishable_with_an_undated_lot_is_409(
    client: TestClient, db: Session, admin: Headers
) -> None:
    product = create_product(client, admin, perishable=False)
    receive_lot(client, admin, product["id"], expiration_date=None)

    response = client.patch(f"{PRODUCTS}/{product['id']}", json={"perishable": True}, headers=admin)

    assert_problem(response, 409, "/problems/conflict")
    assert client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()["perishable"] is False
    assert [e.action for e in audit_entries(db, product["id"])] == ["product.created"]


def test_making_product_perishable_when_every_lot_is_dated_is_allowed(
    client: TestClient, admin: Headers
) -> None:
    product = create_product(client, admin, perishable=False)
    receive_lot(client, admin, product["id"], expiration_date=today() + timedelta(days=90))

    response = client.patch(f"{PRODUCTS}/{product['id']}", json={"perishable": True}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json()["perishable"] is True


def test_search_text_with_a_nul_character_is_a_clear_400_not_a_server_error(
    client: TestClient, admin: Headers
) -> None:
    response = client.get(PRODUCTS, params={"q": "insulin\x00"}, headers=admin)

    assert_problem(response, 400, "/problems/bad-request")
