"""The low-stock alert end to end, delivered for real: the e-mail reaches the SMTP sink once
when the condition starts, not again while it persists, again after it clears (stock received)
and comes back (stock ordered and written off); SMS likewise; no patient details in any of it."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.inventory.flows import check_stock_alerts
from app.models.status import AlertTopic
from devtools.mail_sink import MailSink
from tests.fixtures.alerts import alert_rows, signed_in, write_off
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.notifications import deliver
from tests.fixtures.orders import create_product, place_order, receive_lot
from tests.fixtures.patients import Headers, create_patient, user_id

ADMIN_PHONE = "+15550100177"
SWEEP = Actor.system("stock-alerts")


def mails_to(sink: MailSink, address: str) -> list[EmailMessage]:
    found = []
    for path in sink.messages():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if str(message["To"]) == address:
            found.append(message)
    return found


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def sms_to(data_dir: Path, number: str) -> list[str]:
    log = data_dir / "sms.log"
    if not log.exists():
        return []
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    return [sms["body"] for sms in sent if sms["to"] == number]


def subscribe(client: TestClient, headers: Headers, channels: dict[str, object]) -> str:
    response = client.put(
        "/api/v1/users/me/alert-subscriptions",
        json={"subscriptions": {"stock": channels}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    address: str = response.json()["email"]
    return address


def sweep_and_deliver(db: Session, sessions: sessionmaker[Session]) -> None:
    check_stock_alerts(db, SWEEP)
    report = deliver(db, sessions)
    assert report.errors == []


def test_a_low_stock_email_arrives_once_per_occurrence_and_holds_no_patient_details(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    doctor: Headers,
    jwt_issuer: JwtIssuer,
    mail_sink: MailSink,
    tmp_path: Path,
) -> None:
    manager = signed_in(jwt_issuer, "admin")
    manager_email = subscribe(client, manager, {"email": True, "sms_to": ADMIN_PHONE})
    leaver = signed_in(jwt_issuer, "doctor")
    leaver_email = subscribe(client, leaver, {"email": True})
    product = create_product(
        client, admin, name="Amoxicillin 500 mg capsules", par_level=5, reorder_quantity=10
    )
    lot = receive_lot(client, admin, product["id"], 8)
    patient = create_patient(client, doctor, name="Jane Roe-Hemingway")
    place_order(client, doctor, patient["id"], (product["id"], 4))  # 4 sellable: at par 5

    sweep_and_deliver(db, sessions)

    (first,) = mails_to(mail_sink, manager_email)
    assert str(first["Subject"]).startswith("Portal stock alert: Low stock: 4 sellable, par 5")
    text = body_of(first)
    assert product["sku"] in text and "Amoxicillin 500 mg capsules" in text
    assert "no sales in 30 days; reorder 10" in text
    assert "/api/v1/alerts?topic=stock&state=open" in text
    assert len(mails_to(mail_sink, leaver_email)) == 1
    assert len(sms_to(tmp_path, ADMIN_PHONE)) == 1

    # Persisting: nothing more, however often the sweep runs.
    for _ in range(3):
        sweep_and_deliver(db, sessions)
    assert len(mails_to(mail_sink, manager_email)) == 1
    assert len(sms_to(tmp_path, ADMIN_PHONE)) == 1

    # The leaver is deactivated: from now on they hear nothing.
    response = client.patch(
        f"/api/v1/users/{user_id(client, leaver)}", json={"active": False}, headers=admin
    )
    assert response.status_code == 200, response.text

    # Stock received: the condition clears (no message).
    # It expires before the first lot, so the next order is served from it (first expiry first
    # out) and the first lot keeps the free units written off below.
    receive_lot(client, admin, product["id"], 10, expires_in_days=200)
    sweep_and_deliver(db, sessions)
    (alert,) = alert_rows(db, AlertTopic.STOCK, f"low-stock:{product['id']}")
    assert alert.cleared_at is not None
    assert len(mails_to(mail_sink, manager_email)) == 1

    # Sold and written off below par again: a new alert, told again.
    place_order(client, doctor, patient["id"], (product["id"], 6))
    write_off(client, admin, lot["id"], 4)  # 14 sellable - 6 ordered - 4 damaged: 4 again
    sweep_and_deliver(db, sessions)

    mails = mails_to(mail_sink, manager_email)
    assert len(mails) == 2
    assert len(alert_rows(db, AlertTopic.STOCK, f"low-stock:{product['id']}")) == 2
    assert len(mails_to(mail_sink, leaver_email)) == 1  # deactivated: nothing new
    texts = sms_to(tmp_path, ADMIN_PHONE)
    assert len(texts) == 2
    assert texts[0].startswith("Portal stock alert: Low stock: 4 sellable, par 5")

    # No patient details anywhere in what staff received.
    patient_details = [
        patient["name"],
        "Hemingway",
        patient["email"],
        patient["email"].split("@")[0],
        patient["date_of_birth"],
        "010-0199",
        "5550100199",
    ]
    everything = [str(m["Subject"]) + body_of(m) for m in mails] + texts
    for message in everything:
        for detail in patient_details:
            assert detail.lower() not in message.lower(), f"{detail!r} in an alert"
    # The patient's own e-mails (checkout links) went to the patient only.
    assert all(str(m["To"]) != manager_email for m in mails_to(mail_sink, patient["email"]))
