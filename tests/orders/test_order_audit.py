"""The audit trail of orders: a row per transition and per read, notes encrypted at rest and
redacted, and re-encrypted when the key rotates."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import phi
from app.config import get_settings
from app.models import AuditEntry
from app.orders import service as orders
from tests.fixtures.identity import Auth
from tests.fixtures.orders import (
    ORDERS,
    get_order,
    order_audit_actions,
    pay,
    place_order,
    raw_order_row,
    receive_lot,
)
from tests.fixtures.patients import Headers, Json, audit_entries, create_patient, second_phi_key


def test_every_order_transition_writes_an_audit_row(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 20)
    shipped = place_order(client, doctor, patient["id"], (product["id"], 2))
    client.patch(
        f"{ORDERS}/{shipped['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 3}]},
        headers=doctor,
    )
    pay(db, shipped["id"])
    client.post(f"{ORDERS}/{shipped['id']}/fulfil", headers=admin)
    dropped = place_order(client, doctor, patient["id"], (product["id"], 1))
    client.post(f"{ORDERS}/{dropped['id']}/cancel", headers=admin)

    assert order_audit_actions(db, shipped["id"]) == [
        ("order.created", "doctor-main"),
        ("order.edited", "doctor-main"),
        ("order.paid", "system:test"),
        ("order.fulfilled", "admin-main"),
    ]
    assert order_audit_actions(db, dropped["id"]) == [
        ("order.created", "doctor-main"),
        ("order.cancelled", "admin-main"),
    ]
    (edited,) = audit_entries(db, shipped["id"], "order.edited")
    assert edited.before is not None and edited.after is not None
    assert edited.before["items"][0]["quantity"] == 2
    assert edited.after["items"][0]["quantity"] == 3
    assert edited.after["total_cents"] == 3 * 1299


def test_order_note_is_encrypted_at_rest_and_redacted_in_the_audit_log(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    note = "Allergic to penicillin; deliver before 9 am"

    order = place_order(client, doctor, patient["id"], (product["id"], 1), note=note)

    assert order["note"] == note
    stored = db.execute(
        text("SELECT note_encrypted FROM orders WHERE id = :id"), {"id": uuid.UUID(order["id"])}
    ).scalar_one()
    assert stored.startswith("enc1:")
    assert "penicillin" not in stored.lower()
    assert phi.decrypt(stored, orders.note_context(uuid.UUID(order["id"]))) == note
    (created,) = audit_entries(db, order["id"], "order.created")
    assert "penicillin" not in json.dumps([created.before, created.after]).lower()
    assert get_order(client, doctor, order["id"])["note"] == note
    (read,) = audit_entries(db, order["id"], "order.read")
    assert read.actor_subject == "doctor-main"


def test_reading_an_order_writes_one_order_read_row_naming_it_even_without_a_note(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    """An order's items are a patient's medications: every read of one is a PHI read."""
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1))
    assert order["note"] is None
    assert audit_entries(db, order["id"], "order.read") == []

    get_order(client, doctor, order["id"])
    get_order(client, admin, order["id"])

    reads = audit_entries(db, order["id"], "order.read")
    assert [(r.actor_subject, r.entity_type, r.entity_id) for r in reads] == [
        ("doctor-main", "order", order["id"]),
        ("admin-main", "order", order["id"]),
    ]
    assert all(r.request_id for r in reads)


def test_a_refused_order_read_is_not_audited_as_a_read(
    client: TestClient, db: Session, admin: Headers, auth: Auth, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(
        client, auth("doctor", sub="doctor-main"), patient["id"], (product["id"], 1)
    )
    stranger = auth("doctor", sub="doctor-stranger")

    assert client.get(f"{ORDERS}/{order['id']}", headers=stranger).status_code == 404

    assert audit_entries(db, order["id"], "order.read") == []


def order_list_reads(db: Session) -> list[Any]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEntry).where(AuditEntry.action == "order.listed").order_by(AuditEntry.id)
        )
    )


def test_each_order_list_read_writes_one_audit_row_naming_the_ids_returned(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, auth: Auth, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 50)
    mine = create_patient(client, doctor)
    second_doctor = auth("doctor", sub="doctor-second")
    theirs = create_patient(client, second_doctor)
    first = place_order(client, doctor, mine["id"], (product["id"], 1))
    second = place_order(client, doctor, mine["id"], (product["id"], 1))
    foreign = place_order(client, second_doctor, theirs["id"], (product["id"], 1))
    assert order_list_reads(db) == []

    page = client.get(ORDERS, params={"limit": 1}, headers=doctor).json()
    rest = client.get(
        ORDERS, params={"limit": 1, "cursor": page["next_cursor"]}, headers=doctor
    ).json()
    everything = client.get(ORDERS, params={"status": "pending"}, headers=admin).json()
    nothing = client.get(ORDERS, params={"status": "paid"}, headers=doctor).json()

    rows = order_list_reads(db)
    assert [(r.actor_subject, r.entity_type) for r in rows] == [
        ("doctor-main", "order"),
        ("doctor-main", "order"),
        ("admin-main", "order"),
        ("doctor-main", "order"),
    ]
    listed = [r.after["order_ids"] for r in rows if r.after is not None]
    assert listed == [
        [o["id"] for o in page["items"]],
        [o["id"] for o in rest["items"]],
        [o["id"] for o in everything["items"]],
        [],
    ]
    # One order a page, both of the doctor's own (one transaction here: same created_at).
    assert sorted(listed[0] + listed[1]) == sorted([first["id"], second["id"]])
    assert set(listed[2]) >= {first["id"], second["id"], foreign["id"]}
    assert nothing["items"] == []
    assert rows[2].after is not None and rows[2].after["status"] == "pending"


def test_key_rotation_reencrypts_order_notes_and_cancellation_notes(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, patient: Json, product: Json
) -> None:
    receive_lot(client, admin, product["id"], 5)
    order = place_order(client, doctor, patient["id"], (product["id"], 1), note="Take with food")
    client.post(
        f"{ORDERS}/{order['id']}/cancel",
        json={"reason": "prescriber_change", "note": "Switched after a rash"},
        headers=doctor,
    )
    plain_order = place_order(client, doctor, patient["id"], (product["id"], 1))
    order_id = uuid.UUID(order["id"])

    with second_phi_key() as k2_material:
        assert orders.rotate_order_notes(db, batch=1) == 1
        db.commit()

        row = raw_order_row(db, order["id"])
        only_k2 = phi.PhiKeys.parse(f"k2:{k2_material}", "k2", get_settings().phi_hash_key)
        assert phi.decrypt(row["note_encrypted"], orders.note_context(order_id), only_k2) == (
            "Take with food"
        )
        assert phi.decrypt(
            row["cancellation_note_encrypted"], orders.cancellation_note_context(order_id), only_k2
        ) == ("Switched after a rash")
        assert raw_order_row(db, plain_order["id"])["note_encrypted"] is None
        assert orders.rotate_order_notes(db) == 0
        assert get_order(client, admin, order["id"])["cancellation_note"] == (
            "Switched after a rash"
        )
