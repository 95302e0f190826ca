"""Queueing: one outbox message in the caller's transaction, nothing about the patient in clear."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import phi
from app.models import OutboxMessage
from app.models.base import utcnow
from app.notifications.service import (
    EMAIL_TOPIC,
    SMS_TOPIC,
    InvalidRecipient,
    queue_email,
    queue_sms,
)
from app.notifications.templates import TemplateError, order_reference
from tests.fixtures.notifications import outbox_row
from tests.fixtures.patients import Headers

ADDRESS = "jane.roe.7c1e@example.com"
PHONE = "+1 (555) 010-0199"
ORDER_ID = uuid.UUID("3f2b9c4e-1d2a-4b5c-8d7e-0a1b2c3d4e5f")


def checkout_context() -> dict[str, str]:
    return {
        "checkout_url": "http://127.0.0.1:8000/checkout/tok_abcdef0123456789",
        "expires_at": (utcnow() + timedelta(hours=72)).isoformat(),
        "order_reference": order_reference(ORDER_ID),
    }


def test_queue_email_writes_an_outbox_message_without_the_address_in_clear(db: Session) -> None:
    key = queue_email(
        db,
        to=ADDRESS,
        template="checkout_link",
        context=checkout_context(),
        dedupe_key=f"checkout-link-{ORDER_ID}",
    )

    row = outbox_row(db, key)
    assert (row.topic, row.status, row.attempts) == (EMAIL_TOPIC, "pending", 0)
    assert row.dedupe_key == f"notification.email:checkout-link-{ORDER_ID}"
    stored = json.dumps(row.payload)
    assert ADDRESS not in stored
    assert ADDRESS.split("@")[0] not in stored
    # The checkout link carries a bearer token: the context is sealed too.
    assert "tok_abcdef0123456789" not in stored
    assert row.payload["template"] == "checkout_link"
    assert phi.decrypt(row.payload["to"], f"outbox.{key}.to") == ADDRESS
    # A ciphertext is bound to its message: copied into another message it does not open.
    with pytest.raises(phi.PhiKeyError):
        phi.decrypt(row.payload["to"], "outbox.notification.email:another-key.to")


def test_queue_sms_stores_the_number_encrypted_in_e164(db: Session) -> None:
    key = queue_sms(
        db,
        to=PHONE,
        template="payment_received",
        context={
            "order_reference": order_reference(ORDER_ID),
            "status_url": f"http://127.0.0.1:8000/orders/{ORDER_ID}/status",
        },
        dedupe_key=f"payment-received-{ORDER_ID}",
    )

    row = outbox_row(db, key)
    assert row.topic == SMS_TOPIC
    stored = json.dumps(row.payload)
    for shown in (PHONE, "+15550100199", "5550100199", "010-0199"):
        assert shown not in stored
    assert phi.decrypt(row.payload["to"], f"outbox.{key}.to") == "+15550100199"


def test_the_message_is_part_of_the_callers_transaction(db: Session) -> None:
    savepoint = db.begin_nested()
    key = queue_email(
        db, to=ADDRESS, template="checkout_link", context=checkout_context(), dedupe_key="tx-1"
    )
    savepoint.rollback()
    db.expire_all()
    assert db.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == key)) is None


def test_queueing_the_same_key_twice_sends_one_message_per_channel(db: Session) -> None:
    key = f"cancelled-{uuid.uuid4()}"
    context = {"order_reference": order_reference(ORDER_ID), "refunded": "yes"}
    first = queue_email(db, to=ADDRESS, template="order_cancelled", context=context, dedupe_key=key)
    again = queue_email(
        db, to="other@example.com", template="order_cancelled", context=context, dedupe_key=key
    )
    sms = queue_sms(db, to=PHONE, template="order_cancelled", context=context, dedupe_key=key)

    assert first == again != sms
    db.expire_all()
    rows = list(db.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key.like(f"%{key}"))))
    assert sorted(r.topic for r in rows) == [EMAIL_TOPIC, SMS_TOPIC]
    email_row = outbox_row(db, first)
    assert phi.decrypt(email_row.payload["to"], f"outbox.{first}.to") == ADDRESS  # the first


@pytest.mark.parametrize(
    "address",
    [
        "Jane Roe <jane@example.com>",  # a display name would put the patient's name in To
        "jane@example.com, eve@example.com",
        "jane@example.com\r\nBcc: eve@example.com",
        "jane",
        "jane@localhost",
        "",
    ],
)
def test_an_unusable_address_is_refused_without_echoing_it(db: Session, address: str) -> None:
    before = db.scalar(select(func.count()).select_from(OutboxMessage))
    with pytest.raises(InvalidRecipient) as refused:
        queue_email(
            db, to=address, template="checkout_link", context=checkout_context(), dedupe_key="x"
        )
    assert refused.value.status == 422
    if address:
        assert address not in str(refused.value)
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == before


@pytest.mark.parametrize("number", ["555 010 0199", "+1 555", "+0 555 010 0199", "call me"])
def test_an_sms_needs_an_international_number(db: Session, number: str) -> None:
    with pytest.raises(InvalidRecipient):
        queue_sms(
            db, to=number, template="checkout_link", context=checkout_context(), dedupe_key="x"
        )


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("no_such_template", {}),
        ("payment_received", {"order_reference": "3f2b9c4e"}),  # status_url missing
        (
            "payment_received",
            {
                "order_reference": "3f2b9c4e",
                "status_url": "http://127.0.0.1:8000/s",
                "product": "Amoxicillin",  # not a field of any template
            },
        ),
    ],
)
def test_a_wrong_template_or_context_fails_the_caller_at_once(
    db: Session, template: str, context: dict[str, str]
) -> None:
    with pytest.raises(TemplateError):
        queue_email(db, to=ADDRESS, template=template, context=context, dedupe_key="x")


@pytest.mark.parametrize("key", ["", "has space", "x" * 161, "naïve"])
def test_dedupe_keys_are_short_printable_ascii(db: Session, key: str) -> None:
    with pytest.raises(ValueError, match="dedupe_key"):
        queue_email(
            db, to=ADDRESS, template="checkout_link", context=checkout_context(), dedupe_key=key
        )


def test_the_admin_outbox_view_shows_no_recipient(
    client: TestClient, db: Session, admin: Headers
) -> None:
    key = queue_email(
        db, to=ADDRESS, template="checkout_link", context=checkout_context(), dedupe_key="admin-1"
    )
    db.commit()

    response = client.get("/api/v1/outbox", params={"status": "pending"}, headers=admin)

    assert response.status_code == 200, response.text
    (item,) = [i for i in response.json()["items"] if i["dedupe_key"] == key]
    assert item["topic"] == EMAIL_TOPIC
    assert ADDRESS not in response.text
    assert "tok_abcdef0123456789" not in response.text


def test_key_rotation_reencrypts_queued_messages_so_the_old_key_can_retire(db: Session) -> None:
    """`portal keys rotate` covers the recipient and context of messages in the outbox: after
    it, every message opens with the new key alone."""
    from app.config import get_settings
    from app.notifications.service import rotate_message_keys
    from tests.fixtures.patients import second_phi_key

    order_id = uuid.uuid4()
    context = {"order_reference": order_reference(order_id), "refunded": "no"}
    email_key = queue_email(
        db,
        to="rotate.me@example.com",
        template="order_cancelled",
        context=context,
        dedupe_key=f"rotate-{order_id}",
    )
    sms_key = queue_sms(
        db,
        to="+44 20 7946 0958",
        template="order_cancelled",
        context=context,
        dedupe_key=f"rotate-{order_id}",
    )

    with second_phi_key() as k2_material:
        assert rotate_message_keys(db, batch=1) == 2
        assert rotate_message_keys(db) == 0  # resumable: nothing left to do
        only_k2 = phi.PhiKeys.parse(f"k2:{k2_material}", "k2", get_settings().phi_hash_key)
        for key, to in ((email_key, "rotate.me@example.com"), (sms_key, "+442079460958")):
            payload = outbox_row(db, key).payload
            assert phi.decrypt(payload["to"], f"outbox.{key}.to", only_k2) == to
            assert (
                json.loads(phi.decrypt(payload["context"], f"outbox.{key}.context", only_k2))
                == context
            )
