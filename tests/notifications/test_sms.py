"""SMS: the development `log` provider end to end, and the Twilio provider's requests and error
handling against a stand-in (the real Twilio API cannot be reached from the tests)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.notifications.service import queue_sms
from app.notifications.sms import (
    LogSmsProvider,
    SmsUnavailable,
    TwilioSmsProvider,
    sms_provider,
)
from app.notifications.templates import order_reference
from app.outbox.service import PermanentFailure
from tests.fixtures.notifications import deliver, outbox_row
from tests.fixtures.settings import production_settings, settings_env

ORDER_ID = uuid.UUID("5ad1e5ee-1d2a-4b5c-8d7e-0a1b2c3d4e5f")
STATUS_URL = f"http://127.0.0.1:8000/orders/{ORDER_ID}/status"
NUMBER = "+15550100199"
SID, TOKEN = "AC" + "0" * 32, "twilio-test-token"


def queue_payment_received(db: Session, to: str = "+1 (555) 010-0199") -> str:
    key = queue_sms(
        db,
        to=to,
        template="payment_received",
        context={"order_reference": order_reference(ORDER_ID), "status_url": STATUS_URL},
        dedupe_key=f"payment-received-{uuid.uuid4()}",
    )
    db.commit()
    return key


def test_the_log_provider_writes_the_message(
    db: Session, sessions: sessionmaker[Session], data_dir: Path
) -> None:
    key = queue_payment_received(db)

    report = deliver(db, sessions)

    assert (report.delivered, report.errors) == (1, [])
    (line,) = (data_dir / "sms.log").read_text().splitlines()
    sent = json.loads(line)
    assert sent["to"] == NUMBER
    assert sent["reference"] == key
    assert sent["body"] == (
        f"Payment received for order {order_reference(ORDER_ID)}. Status: paid."
        f" Follow it: {STATUS_URL}"
    )
    assert outbox_row(db, key).status == "delivered"


def test_the_log_provider_appends(tmp_path: Path) -> None:
    provider = LogSmsProvider(tmp_path / "nested" / "sms.log")
    provider.send(to=NUMBER, body="one", reference="r1")
    provider.send(to=NUMBER, body="two", reference="r2")
    lines = [json.loads(x) for x in (tmp_path / "nested" / "sms.log").read_text().splitlines()]
    assert [x["body"] for x in lines] == ["one", "two"]


def test_settings_choose_the_provider(tmp_path: Path) -> None:
    log = Settings(sms_provider="log", data_dir=tmp_path)
    assert isinstance(sms_provider(log), LogSmsProvider)
    twilio = Settings(
        sms_provider="twilio", twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_from=NUMBER
    )
    assert isinstance(sms_provider(twilio), TwilioSmsProvider)
    with pytest.raises(ValidationError, match="TWILIO_ACCOUNT_SID"):
        Settings(sms_provider="twilio")


def test_production_refuses_the_log_provider_and_plaintext_remote_smtp() -> None:
    production = production_settings(
        sms_provider="twilio", twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_from=NUMBER
    )
    Settings(**production)
    with pytest.raises(ValidationError, match="SMS_PROVIDER"):
        Settings(**{**production, "sms_provider": "log"})
    with pytest.raises(ValidationError, match="SMTP_STARTTLS"):
        Settings(**{**production, "smtp_starttls": False})


# --- Twilio ------------------------------------------------------------------------------------


class Recorded:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def transport(self, status: int, answer: dict[str, Any]) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(status, json=answer)

        return httpx.MockTransport(handle)


def twilio(transport: httpx.BaseTransport, sender: str = "+15550009999") -> TwilioSmsProvider:
    return TwilioSmsProvider(account_sid=SID, auth_token=TOKEN, sender=sender, transport=transport)


def test_twilio_posts_to_the_messages_api_with_basic_auth() -> None:
    recorded = Recorded()
    provider = twilio(recorded.transport(201, {"sid": "SM1", "status": "queued"}))

    provider.send(to=NUMBER, body="Payment received", reference="k")

    (request,) = recorded.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
    expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "To": [NUMBER],
        "From": ["+15550009999"],
        "Body": ["Payment received"],
    }


def test_twilio_messaging_service_sender() -> None:
    recorded = Recorded()
    twilio(recorded.transport(201, {}), sender="MG" + "1" * 32).send(
        to=NUMBER, body="b", reference="k"
    )
    form = parse_qs(recorded.requests[0].content.decode())
    assert form["MessagingServiceSid"] == ["MG" + "1" * 32] and "From" not in form


def test_twilio_refusing_the_number_is_permanent_and_the_number_is_not_kept() -> None:
    answer = {
        "code": 21211,
        "message": f"The 'To' number {NUMBER} is not a valid phone number.",
        "status": 400,
    }
    with pytest.raises(PermanentFailure) as refused:
        twilio(Recorded().transport(400, answer)).send(to=NUMBER, body="b", reference="k")
    assert "21211" in str(refused.value)
    assert NUMBER not in str(refused.value)


@pytest.mark.parametrize("status", [401, 429, 500, 503])
def test_twilio_outages_limits_and_credentials_are_retried(status: int) -> None:
    with pytest.raises(SmsUnavailable):
        twilio(Recorded().transport(status, {"code": 20429, "message": "Too Many Requests"})).send(
            to=NUMBER, body="b", reference="k"
        )


def test_twilio_unreachable_is_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SmsUnavailable, match="unreachable"):
        twilio(httpx.MockTransport(refuse)).send(to=NUMBER, body="b", reference="k")


class FakeTwilio(BaseHTTPRequestHandler):
    """A stand-in for api.twilio.com over real HTTP, answering like the Messages API."""

    received: list[tuple[str, str, dict[str, list[str]]]] = []
    status = 201

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = parse_qs(self.rfile.read(length).decode())
        self.received.append((self.path, self.headers["Authorization"], form))
        body = json.dumps(
            {"sid": "SM" + uuid.uuid4().hex, "status": "queued"}
            if self.status < 300
            else {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_twilio() -> Iterator[type[FakeTwilio]]:
    FakeTwilio.received, FakeTwilio.status = [], 201
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTwilio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with settings_env(
        SMS_PROVIDER="twilio",
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_FROM="+15550009999",
        TWILIO_API_BASE=f"http://127.0.0.1:{server.server_address[1]}",
    ):
        yield FakeTwilio
    server.shutdown()
    server.server_close()


def test_the_worker_sends_through_the_configured_twilio_provider(
    db: Session, sessions: sessionmaker[Session], fake_twilio: type[FakeTwilio]
) -> None:
    assert get_settings().sms_provider == "twilio"
    key = queue_payment_received(db)

    assert deliver(db, sessions).delivered == 1

    ((path, _, form),) = fake_twilio.received
    assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert form["To"] == [NUMBER]
    assert STATUS_URL in form["Body"][0]
    assert outbox_row(db, key).status == "delivered"


def test_an_unsubscribed_number_is_dead_lettered(
    db: Session, sessions: sessionmaker[Session], fake_twilio: type[FakeTwilio]
) -> None:
    fake_twilio.status = 400
    key = queue_payment_received(db)

    assert deliver(db, sessions).dead == 1
    row = outbox_row(db, key)
    assert row.last_error is not None and "21610" in row.last_error
    assert NUMBER not in row.last_error
