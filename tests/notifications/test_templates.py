"""What a message may say: a link, the order's status and a short reference; no health details.

The end-to-end test places a real order (patient, product) and delivers every template by
e-mail (through the SMTP sink) and SMS (the log provider), then reads what was sent."""

from __future__ import annotations

import email
import email.policy
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.models.base import utcnow
from app.notifications.service import queue_email, queue_sms
from app.notifications.templates import TEMPLATES, TemplateError, order_reference, render
from devtools.mail_sink import MailSink
from tests.fixtures.notifications import deliver
from tests.fixtures.orders import create_product, place_order, receive_lot
from tests.fixtures.patients import Headers, Json, create_patient
from tests.fixtures.settings import settings_env

BASE = "http://127.0.0.1:8000"
ORDER_ID = uuid.UUID("3f2b9c4e-1d2a-4b5c-8d7e-0a1b2c3d4e5f")
REF = "3F2B9C4E"


def contexts(order_id: uuid.UUID = ORDER_ID) -> dict[str, dict[str, str]]:
    """A context for every template, with every optional field, as the order flows build them."""
    ref = order_reference(order_id)
    status_url = f"{BASE}/orders/{order_id}/status"
    return {
        "checkout_link": {
            "checkout_url": f"{BASE}/checkout/tok_{uuid.uuid4().hex}",
            "expires_at": (utcnow() + timedelta(hours=72)).isoformat(),
            "order_reference": ref,
        },
        "payment_received": {"order_reference": ref, "status_url": status_url},
        "order_cancelled": {"order_reference": ref, "refunded": "yes", "status_url": status_url},
    }


def assert_no_health_details(text: str, forbidden: list[str]) -> None:
    """Fails if any forbidden value (a product or patient name, ...) or a word of it appears."""
    for value in forbidden:
        assert value.lower() not in text.lower(), f"{value!r} appears in a message"
        for word in re.findall(r"[A-Za-z]{4,}", value):
            assert word.lower() not in text.lower(), f"{word!r} (from {value!r}) appears"


def test_the_check_itself_catches_a_name() -> None:
    with pytest.raises(AssertionError):
        assert_no_health_details("Your Amoxicillin is on its way", ["Amoxicillin 500 mg"])
    with pytest.raises(AssertionError):
        assert_no_health_details("Hello JANE,", ["Jane Roe"])


def test_templates_are_those_the_order_flows_need() -> None:
    assert set(TEMPLATES) >= {"checkout_link", "payment_received", "order_cancelled"}
    assert TEMPLATES["checkout_link"].required == {"checkout_url", "expires_at"}
    assert TEMPLATES["payment_received"].required == {"order_reference", "status_url"}
    assert TEMPLATES["order_cancelled"].required == {"order_reference", "refunded"}


# The messages about one order; "orders_link" (a patient's "my orders" link) is about none.
ORDER_MESSAGES = sorted(set(TEMPLATES) - {"orders_link"})


@pytest.mark.parametrize("name", ORDER_MESSAGES)
def test_every_message_carries_its_link_status_and_reference(name: str) -> None:
    context = contexts()[name]
    rendered = render(name, context)
    status = {"checkout_link": "awaiting payment", "payment_received": "paid"}.get(
        name, "cancelled"
    )
    for text in (rendered.text, rendered.sms):
        assert REF in text
        assert status in text
        link = context.get("checkout_url") or context["status_url"]
        assert link in text
        assert str(ORDER_ID) not in text.replace(link, "")  # the short reference outside links
    assert REF in rendered.subject
    assert len(rendered.sms) <= 320  # two SMS segments at most


def test_checkout_link_states_its_expiry_in_utc() -> None:
    expires = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).astimezone().isoformat()
    rendered = render(
        "checkout_link", {"checkout_url": f"{BASE}/checkout/t", "expires_at": expires}
    )
    assert "2026-12-01 09:30 UTC" in rendered.text
    assert "2026-12-01 09:30 UTC" in rendered.sms
    assert rendered.subject == "Your order is ready for payment"  # the reference is optional


@pytest.mark.parametrize(("refunded", "says"), [("yes", "being refunded"), ("no", "No refund")])
def test_cancellation_says_whether_money_comes_back(refunded: str, says: str) -> None:
    rendered = render("order_cancelled", {"order_reference": REF, "refunded": refunded})
    assert says in rendered.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_reference", "Amoxicillin 500 mg"),
        ("order_reference", "Jane Roe"),
        ("order_reference", str(ORDER_ID)),  # the whole id: only the first 8 characters
        ("status_url", "https://evil.example/orders/1"),  # a link out of the portal
        ("status_url", f"{BASE}/orders/1 Amoxicillin 500 mg"),
        ("status_url", f"{BASE}/orders/1\r\nBcc: eve@example.com"),
        ("status_url", "javascript:alert(1)"),
        ("refunded", "partially, Amoxicillin was returned"),
    ],
)
def test_free_text_cannot_enter_a_message_through_the_context(field: str, value: str) -> None:
    name = "order_cancelled"
    context = {"order_reference": REF, "refunded": "no", "status_url": f"{BASE}/o", field: value}
    with pytest.raises(TemplateError):
        render(name, context)


@pytest.mark.parametrize("value", ["tomorrow", "2026-12-01T09:30:00", "Amoxicillin"])
def test_expiry_must_be_a_timestamp_with_its_zone(value: str) -> None:
    with pytest.raises(TemplateError):
        render("checkout_link", {"checkout_url": f"{BASE}/c", "expires_at": value})


def test_links_follow_public_base_url() -> None:
    with settings_env(PUBLIC_BASE_URL="https://portal.example.org"):
        render(
            "payment_received",
            {"order_reference": REF, "status_url": "https://portal.example.org/s"},
        )
        with pytest.raises(TemplateError):
            render("payment_received", {"order_reference": REF, "status_url": f"{BASE}/s"})


def test_delivered_messages_about_a_real_order_hold_no_health_details(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    admin: Headers,
    doctor: Headers,
    mail_sink: MailSink,
    data_dir: Path,
) -> None:
    patient: Json = create_patient(client, doctor, name="Jane Roe-Hemingway")
    product = create_product(client, admin, name="Amoxicillin 500 mg capsules")
    insulin = create_product(client, admin, name="Insulin glargine pen")
    for p in (product, insulin):
        receive_lot(client, admin, p["id"], 20)
    order = place_order(
        client, doctor, patient["id"], (product["id"], 2), (insulin["id"], 1), note="diabetic"
    )
    order_id = uuid.UUID(order["id"])
    forbidden = [
        patient["name"],
        patient["date_of_birth"],
        product["name"],
        product["sku"],
        insulin["name"],
        insulin["sku"],
        "diabetic",
    ]

    for name, context in contexts(order_id).items():
        queue_email(db, to=patient["email"], template=name, context=context, dedupe_key=name)
        queue_sms(db, to=patient["phone"], template=name, context=context, dedupe_key=name)
    report = deliver(db, sessions)
    # The three templates by e-mail and SMS, plus the checkout-link e-mail the order itself sent.
    assert (report.delivered, report.errors) == (7, [])

    mails = mail_sink.messages()
    assert len(mails) == 4
    for path in mails:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert str(message["To"]) == patient["email"]
        assert_no_health_details(str(message["Subject"]), forbidden)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        assert_no_health_details(body.get_content(), [*forbidden, patient["phone"]])
        assert order_reference(order_id) in body.get_content()
    sent = [json.loads(line) for line in (data_dir / "sms.log").read_text().splitlines()]
    assert len(sent) == 3
    for sms in sent:
        assert sms["to"] == "+15550100199"
        assert_no_health_details(sms["body"], [*forbidden, patient["email"]])
        assert order_reference(order_id) in sms["body"]


def test_the_reference_is_written_the_same_way_in_messages_and_on_the_patient_pages() -> None:
    """Upper case everywhere, so a patient comparing the e-mail with the page sees one string."""
    order_id = uuid.UUID("3f1e1f8e-8b54-4a6f-9d1e-1f0c2a9d4b11")

    assert order_reference(order_id) == "3F1E1F8E"
    rendered = render(
        "payment_received",
        {"order_reference": order_reference(order_id), "status_url": f"{BASE}/orders/status"},
    )
    assert "3F1E1F8E" in rendered.text
    with pytest.raises(TemplateError):
        render(
            "payment_received",
            {"order_reference": "3f1e1f8e", "status_url": f"{BASE}/orders/status"},
        )


def test_the_orders_link_message_carries_the_link_and_its_expiry_only() -> None:
    rendered = render(
        "orders_link",
        {"orders_url": f"{BASE}/my-orders/t0k3n", "expires_at": "2026-12-01T12:00:00+00:00"},
    )
    for text in (rendered.text, rendered.sms):
        assert f"{BASE}/my-orders/t0k3n" in text
        assert "2026-12-01 12:00 UTC" in text
    with pytest.raises(TemplateError):  # a link out of the portal is refused
        render(
            "orders_link",
            {"orders_url": "https://elsewhere.test/x", "expires_at": "2026-12-01T12:00:00+00:00"},
        )
