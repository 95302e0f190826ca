"""E-mail delivery through the real development SMTP sink: what arrives, what a crash repeats,
what is retried and what is dead-lettered."""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import uuid
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app import phi
from app.models import OutboxMessage
from app.models.base import utcnow
from app.notifications.mailer import EmailSender, MailUnavailable, message_id
from app.notifications.service import EMAIL_TOPIC, deliver_email, queue_email
from app.notifications.templates import order_reference
from app.outbox import service as outbox
from app.outbox.service import MAX_ATTEMPTS, Claimed, PermanentFailure
from devtools.mail_sink import MailSink
from tests.fixtures.notifications import closed_port, deliver, outbox_row
from tests.fixtures.settings import settings_env

ADDRESS = "jane.roe.41d0@example.com"
ORDER_ID = uuid.UUID("9c0ffee0-1d2a-4b5c-8d7e-0a1b2c3d4e5f")
CHECKOUT_URL = "http://127.0.0.1:8000/checkout/tok_0123456789abcdef"


def queue_checkout_link(db: Session, to: str = ADDRESS) -> str:
    key = queue_email(
        db,
        to=to,
        template="checkout_link",
        context={
            "checkout_url": CHECKOUT_URL,
            "expires_at": (utcnow() + timedelta(hours=72)).isoformat(),
            "order_reference": order_reference(ORDER_ID),
        },
        dedupe_key=f"checkout-link-{uuid.uuid4()}",
    )
    db.commit()
    return key


def read_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def make_due(db: Session, key: str) -> None:
    """Time passes: the retry is due and any claim has lapsed."""
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.dedupe_key == key)
        .values(next_attempt_at=utcnow() - timedelta(seconds=1), claimed_until=None)
    )
    db.commit()


def test_an_email_arrives_as_an_eml_with_recipient_subject_message_id_and_link(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    key = queue_checkout_link(db)

    report = deliver(db, sessions)

    assert (report.delivered, report.retried, report.dead, report.errors) == (1, 0, 0, [])
    row = outbox_row(db, key)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 1, None)
    (path,) = mail_sink.messages()
    message = read_eml(path)
    assert message["To"] == ADDRESS
    assert message["From"] == "Portal <no-reply@portal.localhost>"
    assert message["Subject"] == f"Your order {order_reference(ORDER_ID)} is ready for payment"
    assert message["Message-ID"] == message_id(key, "portal.localhost")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Sink-Envelope-To"] == f"<{ADDRESS}>"
    assert message["X-Sink-Envelope-From"] == "<no-reply@portal.localhost>"
    body = body_of(message)
    assert CHECKOUT_URL in body
    assert "awaiting payment" in body


def test_redelivery_after_a_crash_repeats_the_same_message_id(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    key = queue_checkout_link(db)

    def killed_after_sending(message: Claimed) -> None:
        deliver_email(message)  # the server accepted the message ...
        raise KeyboardInterrupt  # ... and the worker died before recording it

    with pytest.raises(KeyboardInterrupt):
        deliver(db, sessions, {EMAIL_TOPIC: killed_after_sending})
    row = outbox_row(db, key)
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.claimed_until is not None  # claimed: nobody else sends it during the lease

    make_due(db, key)  # the lease lapses; another worker takes the message
    assert deliver(db, sessions).delivered == 1

    first, second = (read_eml(p) for p in mail_sink.messages())
    assert first["Message-ID"] == second["Message-ID"] == message_id(key, "portal.localhost")
    assert (first["Subject"], body_of(first)) == (second["Subject"], body_of(second))
    row = outbox_row(db, key)
    assert (row.status, row.attempts) == ("delivered", 1)


def test_message_ids_are_stable_opaque_and_distinct() -> None:
    key = f"notification.email:checkout-link-{ORDER_ID}"
    assert message_id(key, "portal.localhost") == message_id(key, "portal.localhost")
    assert message_id(key + "x", "portal.localhost") != message_id(key, "portal.localhost")
    assert str(ORDER_ID) not in message_id(key, "portal.localhost")
    assert email.utils.parseaddr(message_id(key, "portal.localhost"))[1].endswith(
        "@portal.localhost"
    )


def test_an_unreachable_server_is_retried_with_backoff_then_dead_lettered(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    key = queue_checkout_link(db)
    with settings_env(SMTP_PORT=str(closed_port()), SMTP_TIMEOUT_SECONDS="2"):
        for attempt in range(1, MAX_ATTEMPTS):
            started = utcnow()
            report = deliver(db, sessions)
            assert (report.delivered, report.retried, report.dead) == (0, 1, 0)
            row = outbox_row(db, key)
            assert (row.status, row.attempts) == ("pending", attempt)
            assert row.next_attempt_at > started  # backed off, not due again at once
            assert row.last_error is not None
            assert "unreachable" in row.last_error and "ConnectionRefused" in row.last_error
            assert ADDRESS not in row.last_error
            assert deliver(db, sessions).retried == 0  # not due yet
            make_due(db, key)

        report = deliver(db, sessions)

    assert (report.delivered, report.retried, report.dead) == (0, 0, 1)
    row = outbox_row(db, key)
    assert (row.status, row.attempts) == ("dead", MAX_ATTEMPTS)


def test_a_server_that_comes_back_gets_the_message(
    db: Session, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    key = queue_checkout_link(db)
    port = closed_port()
    with settings_env(SMTP_PORT=str(port)):
        assert deliver(db, sessions).retried == 1
        make_due(db, key)
        with MailSink(tmp_path / "mail", port=port) as sink:
            assert deliver(db, sessions).delivered == 1
    assert len(sink.messages()) == 1
    assert outbox_row(db, key).attempts == 2


def test_a_refused_recipient_is_dead_lettered_at_once_without_its_address(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    refused = "Jane.Roe@Nowhere.INVALID"  # the sink answers 550 for the .invalid domain
    key = queue_checkout_link(db, to=refused)

    report = deliver(db, sessions)

    assert (report.delivered, report.retried, report.dead) == (0, 0, 1)
    row = outbox_row(db, key)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error is not None
    assert row.last_error.startswith("PermanentFailure: the mail server refused the recipient: 550")
    assert refused.lower() not in row.last_error.lower()
    assert "[redacted]" in row.last_error
    assert mail_sink.messages() == []


def test_smtp_credentials_are_used_when_configured(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    queue_checkout_link(db)
    with settings_env(SMTP_USERNAME="portal", SMTP_PASSWORD="secret"):
        assert deliver(db, sessions).delivered == 1
    assert len(mail_sink.messages()) == 1


def test_starttls_required_but_not_offered_is_retried(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    key = queue_checkout_link(db)
    with settings_env(SMTP_STARTTLS="true"):
        assert deliver(db, sessions).retried == 1
    assert "STARTTLS" in (outbox_row(db, key).last_error or "")
    assert mail_sink.messages() == []


def test_a_message_that_cannot_be_rendered_is_dead_lettered(
    db: Session, sessions: sessionmaker[Session], mail_sink: MailSink
) -> None:
    key = f"{EMAIL_TOPIC}:broken-{uuid.uuid4()}"
    outbox.enqueue(
        db,
        EMAIL_TOPIC,
        key,
        {
            "template": "a_template_since_removed",
            "to": phi.encrypt(ADDRESS, f"outbox.{key}.to"),
            "context": phi.encrypt("{}", f"outbox.{key}.context"),
        },
    )
    assert deliver(db, sessions).dead == 1
    assert "cannot be rendered" in (outbox_row(db, key).last_error or "")


class FakeSmtp:
    """smtplib.SMTP that fails as told (for replies the sink never gives)."""

    error: BaseException

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> FakeSmtp:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def ehlo(self) -> None:
        pass

    def send_message(self, *args: Any, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (smtplib.SMTPRecipientsRefused({ADDRESS: (550, f"<{ADDRESS}> unknown".encode())}), True),
        (smtplib.SMTPRecipientsRefused({ADDRESS: (450, f"<{ADDRESS}> busy".encode())}), False),
        (smtplib.SMTPDataError(554, f"rejected for {ADDRESS}".encode()), True),
        (smtplib.SMTPDataError(451, b"try again later"), False),
        (smtplib.SMTPSenderRefused(553, b"sender not allowed", "no-reply@x"), False),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False),
        (TimeoutError("timed out"), False),
        (socket.gaierror(-2, "Name or service not known"), False),
    ],
)
def test_smtp_errors_are_sorted_into_retry_or_dead_letter(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, permanent: bool
) -> None:
    FakeSmtp.error = error
    monkeypatch.setattr(smtplib, "SMTP", FakeSmtp)
    sender = EmailSender(host="smtp.example.org", port=587, mail_from="p <no-reply@example.org>")

    with pytest.raises(PermanentFailure if permanent else MailUnavailable) as caught:
        sender.send(to=ADDRESS, subject="s", body="b", dedupe_key="k")

    assert ADDRESS not in str(caught.value)
