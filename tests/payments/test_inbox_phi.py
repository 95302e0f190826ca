"""The webhook inbox keeps only what the portal needs of each Stripe event: the billing name,
e-mail, phone and address that Stripe objects can carry are readable in no table afterwards,
and migration 0009 rewrites events stored before it the same way."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
from alembic import command
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.integrations.stripe.inbox import stored_payload
from app.migrations import alembic_config
from app.models import StripeEvent
from tests.fixtures.database import TestDatabase
from tests.fixtures.patients import Json
from tests.fixtures.payments import deliver, order_status, payment_of
from tests.fixtures.stripe import charge_event, intent_event, stripe_event

NAME = "Zebulon Quixote"
EMAIL = "zebulon.quixote@example.test"
PHONE = "+1 555 0199 321"
STREET = "77 Quixote Lane"
TRACES = ("zebulon", "quixote", "0199 321")

BILLING = {
    "name": NAME,
    "email": EMAIL,
    "phone": PHONE,
    "address": {"line1": STREET, "city": "Springfield", "postal_code": "01199", "country": "US"},
}


def with_phi(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as Stripe can send it: billing details, receipt e-mail, shipping, descriptions."""
    return {
        **obj,
        "billing_details": BILLING,
        "receipt_email": EMAIL,
        "description": f"Order for {NAME}",
        "shipping": {"name": NAME, "phone": PHONE, "address": BILLING["address"]},
        "payment_method_details": {"card": {"last4": "4242"}, "billing_details": BILLING},
        "metadata": {**obj.get("metadata", {}), "patient": NAME},
        "customer": {"id": "cus_123", "name": NAME, "email": EMAIL},
        "payment_method": {"id": "pm_123", "billing_details": BILLING},
    }


def phi_events(intent_id: str, total: int, order_id: str) -> list[dict[str, Any]]:
    charge = with_phi(
        {
            "id": "ch_phi",
            "object": "charge",
            "amount": total,
            "currency": "usd",
            "payment_intent": intent_id,
        }
    )
    refund = {
        "id": "re_phi",
        "object": "refund",
        "amount": total,
        "currency": "usd",
        "status": "succeeded",
        "charge": "ch_phi",
        "payment_intent": intent_id,
        "description": f"Refund for {NAME}",
        "metadata": {"note": EMAIL},
    }
    succeeded = intent_event(
        "payment_intent.succeeded",
        intent_id,
        amount=total,
        currency="usd",
        latest_charge=charge,
        payment_method_types=["card"],
    )
    succeeded["data"]["object"] = with_phi(
        {**succeeded["data"]["object"], "metadata": {"order_id": order_id}}
    )
    succeeded["data"]["previous_attributes"] = {"receipt_email": EMAIL}
    failed = intent_event(
        "payment_intent.payment_failed",
        intent_id,
        last_payment_error={
            "code": "card_declined",
            "message": "Your card was declined.",
            "payment_method": {"id": "pm_1", "billing_details": BILLING},
        },
    )
    failed["data"]["object"] = with_phi(failed["data"]["object"])
    dispute = charge_event(
        "charge.dispute.created",
        intent_id,
        amount=total,
        charge=charge,
        reason="fraudulent",
        status="needs_response",
        evidence={
            "customer_name": NAME,
            "customer_email_address": EMAIL,
            "billing_address": STREET,
        },
    )
    refunded = stripe_event(
        "charge.refunded",
        {
            **charge,
            "amount_refunded": total,
            "refunded": True,
            "refunds": {"object": "list", "data": [refund]},
        },
    )
    return [
        failed,
        succeeded,
        stripe_event("refund.created", refund),
        refunded,
        dispute,
        stripe_event("customer.updated", {"id": "cus_123", "object": "customer", **BILLING}),
    ]


def text_columns(db: Session) -> list[tuple[str, str]]:
    rows = db.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb',"
            " 'ARRAY', 'USER-DEFINED')"
            " ORDER BY table_name, column_name"
        )
    ).all()
    return [(str(t), str(c)) for t, c in rows]


def readable_traces(db: Session) -> tuple[list[str], set[str]]:
    """Every text and JSON column of every table holding a trace, and the tables not readable."""
    found: list[str] = []
    unreadable: set[str] = set()
    for table, column in text_columns(db):
        if not db.scalar(text(f"SELECT has_table_privilege('\"{table}\"', 'SELECT')")):
            unreadable.add(table)
            continue
        for trace in TRACES:
            hits = db.scalar(
                text(f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS text) ILIKE :p'),
                {"p": f"%{trace}%"},
            )
            if hits:
                found.append(f"{table}.{column} ~ {trace}")
    return found, unreadable


def test_billing_details_in_events_are_readable_in_no_table(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    total = order["total_cents"]
    events = phi_events(intent_id, total, order["id"])
    assert readable_traces(db)[0] == []  # the probe: nothing there before

    outcomes = [deliver(client, event)["outcome"] for event in events]

    # The events were applied: paid, refunded in full (so cancelled), disputed.
    assert outcomes[1] == "order paid"
    assert order_status(db, order["id"]) == "cancelled"
    payment = payment_of(db, intent_id)
    assert (payment.refunded_cents, payment.disputed) == (total, True)
    found, unreadable = readable_traces(db)
    assert found == []
    assert unreadable <= {"alembic_version"}
    # What the inbox keeps is what the portal needs.
    db.expire_all()
    inbox = {e.id: e.payload for e in db.scalars(select(StripeEvent))}
    kept = inbox[events[1]["id"]]
    assert kept == {
        "id": events[1]["id"],
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": events[1]["created"],
        "api_version": "2024-06-20",
        "livemode": False,
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "status": "succeeded",
                "amount": total,
                "currency": "usd",
                "latest_charge": "ch_phi",
                "payment_method": "pm_123",
                "payment_method_types": ["card"],
                "customer": "cus_123",
                "metadata": {"order_id": order["id"]},
            }
        },
    }
    refund_kept = inbox[events[3]["id"]]["data"]["object"]
    assert refund_kept["refunds"] == {
        "data": [
            {
                "id": "re_phi",
                "object": "refund",
                "amount": total,
                "currency": "usd",
                "status": "succeeded",
                "charge": "ch_phi",
                "payment_intent": intent_id,
                "metadata": {},
            }
        ]
    }
    assert (refund_kept["amount_refunded"], refund_kept["refunded"]) == (total, True)


# --- Migration 0009 rewrites what was stored before it ----------------------------------------


def test_migration_0009_rewrites_stored_events_to_what_the_portal_keeps(
    empty_db: TestDatabase,
) -> None:
    config = alembic_config(empty_db.owner_url)
    command.upgrade(config, "0006")
    events = phi_events("pi_before_0009", 2598, "3f1e1f8e-8b54-4a6f-9d1e-1f0c2a9d4b11")
    odd = [
        stripe_event("charge.refunded", {"id": "ch_odd", "refunds": [NAME], "amount": "12"}),
        {"id": "evt_no_data", "type": "ping", "object": "event"},
        {"id": "evt_not_object", "type": "ping", "data": {"object": NAME}},
    ]
    raw = [*events, *odd]
    with psycopg.connect(empty_db.owner_url, autocommit=True) as conn:
        for event in raw:
            conn.execute(
                "INSERT INTO stripe_events (id, type, payload, outcome) VALUES (%s, %s, %s, 'x')",
                (event["id"], event["type"], Jsonb(event)),
            )

    command.upgrade(config, "0009")

    with psycopg.connect(empty_db.owner_url) as conn:
        stored = dict(conn.execute("SELECT id, payload FROM stripe_events").fetchall())
        for trace in TRACES:
            hits = conn.execute(
                "SELECT count(*) FROM stripe_events WHERE payload::text ILIKE %s", (f"%{trace}%",)
            ).fetchone()
            assert hits == (0,), trace
    # The SQL rewrite and the code that stores new events keep exactly the same.
    assert stored == {event["id"]: stored_payload(copy.deepcopy(event)) for event in raw}
    assert stored[events[1]["id"]]["data"]["object"]["metadata"] == {
        "order_id": "3f1e1f8e-8b54-4a6f-9d1e-1f0c2a9d4b11"
    }
