"""The patient hears of each event that concerns them, once, from the transaction that caused it."""

from __future__ import annotations

import email
import email.policy
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.models import OutboxMessage
from app.orders import service as orders
from devtools.mail_sink import MailSink
from tests.fixtures.catalog import create_product
from tests.fixtures.notifications import deliver
from tests.fixtures.orders import place_order, receive_lot
from tests.fixtures.patients import create_patient

Headers = dict[str, str]


def _email_keys(db: Session) -> list[str]:
    db.expire_all()
    return list(
        db.scalars(
            select(OutboxMessage.dedupe_key)
            .where(OutboxMessage.topic == "notification.email")
            .order_by(OutboxMessage.created_at)
        )
    )


def _order(client: TestClient, admin: Headers, doctor: Headers) -> tuple[Any, Any]:
    patient = create_patient(client, doctor)
    product = create_product(client, admin)
    receive_lot(client, admin, product["id"], 10)
    return patient, place_order(client, doctor, patient["id"], (product["id"], 1))


def test_a_new_order_emails_the_patient_their_payment_link(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    doctor: Headers,
    mail_sink: MailSink,
) -> None:
    patient, order = _order(client, admin, doctor)

    keys = _email_keys(db)
    assert len(keys) == 1 and keys[0].startswith("notification.email:checkout-link-")
    assert deliver(db, sessions).delivered == 1
    (path,) = mail_sink.messages()
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert str(message["To"]) == patient["email"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "/pay/" in body.get_content()
    assert order["id"][:8].upper() in body.get_content()


def test_a_reissued_link_is_emailed_again(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    _, order = _order(client, admin, doctor)

    response = client.post(f"/api/v1/orders/{order['id']}/checkout-link", headers=doctor)

    assert response.status_code == 201, response.text
    assert len(_email_keys(db)) == 2


def test_cancelling_a_paid_order_tells_the_patient_it_is_refunded(
    client: TestClient, db: Session, admin: Headers, doctor: Headers
) -> None:
    from app.models import Payment

    _, order = _order(client, admin, doctor)
    order_id = uuid.UUID(order["id"])
    db.add(
        Payment(
            order_id=order_id,
            stripe_payment_intent_id=f"pi_test_{uuid.uuid4().hex[:10]}",
            status="succeeded",
            amount_cents=order["total_cents"],
            currency="usd",
            refunded_cents=0,
            disputed=False,
        )
    )
    orders.mark_paid(db, Actor.system("test"), order_id)
    db.commit()

    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=doctor)

    assert response.status_code == 200, response.text
    keys = _email_keys(db)
    assert keys[-1] == f"notification.email:order-cancelled-{order_id}"
    cancelled = db.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key == keys[-1])).one()
    assert cancelled.payload["template"] == "order_cancelled"
    refund = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == "stripe.refund")).all()
    assert len(refund) == 1
