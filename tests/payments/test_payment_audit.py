"""Every change of a payment's status that the webhook applies is in the audit log, once, with
its before and after, and nothing about the patient."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.patients import Headers, Json, audit_entries
from tests.fixtures.payments import create_intent, deliver
from tests.fixtures.stripe import intent_event

CHANGED = "payment.status_changed"


def changes(db: Session, order_id: str) -> list[tuple[object, object, str]]:
    db.expire_all()
    return [(e.before, e.after, e.actor_subject) for e in audit_entries(db, order_id, CHANGED)]


def test_each_payment_status_change_is_audited_once(
    client: TestClient, db: Session, order: Json, intent_id: str
) -> None:
    bank = {"payment_method": "pm_bank", "payment_method_types": ["us_bank_account"]}
    failed = intent_event("payment_intent.payment_failed", intent_id)
    processing = intent_event("payment_intent.processing", intent_id, **bank)
    succeeded = intent_event("payment_intent.succeeded", intent_id, **bank)

    for event in (failed, processing, processing, succeeded, succeeded):
        deliver(client, event)
    deliver(client, intent_event("payment_intent.payment_failed", intent_id))  # stale: ignored

    webhook = "system:stripe-webhook"
    assert changes(db, order["id"]) == [
        (
            {"status": "requires_payment_method"},
            {
                "payment_intent_id": intent_id,
                "status": "requires_payment_method",
                "failed": True,
                "failure_code": "card_declined",
            },
            webhook,
        ),
        (
            {"status": "requires_payment_method"},
            {"payment_intent_id": intent_id, "status": "processing"},
            webhook,
        ),
        (
            {"status": "processing"},
            {"payment_intent_id": intent_id, "status": "succeeded"},
            webhook,
        ),
    ]


def test_a_cancelled_intent_is_audited(
    client: TestClient, db: Session, doctor: Headers, order: Json
) -> None:
    intent_id = create_intent(client, doctor, order["id"])["payment_intent_id"]
    deliver(client, intent_event("payment_intent.canceled", intent_id))

    assert changes(db, order["id"]) == [
        (
            {"status": "requires_payment_method"},
            {"payment_intent_id": intent_id, "status": "canceled"},
            "system:stripe-webhook",
        )
    ]
