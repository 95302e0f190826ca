"""SMS behind one small interface, one class per vendor, chosen by `SMS_PROVIDER`.

- `log` (development): appends each message as a JSON line to `DATA_DIR/sms.log`.
- `twilio`: the Messages REST API over HTTPS (httpx). Twilio's Messages API takes no idempotency
  key, so a worker that dies after Twilio accepted a message sends it again on retry; the body
  is the same and carries no health details, which is the accepted cost of at-least-once.

A provider raises `PermanentFailure` when the vendor refuses the message for good (e.g. an
invalid or unsubscribed number) and anything else to have the outbox retry. Error texts never
carry the phone number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx

from app.config import Settings
from app.models.base import utcnow
from app.notifications.mailer import redact
from app.outbox.service import PermanentFailure


class SmsUnavailable(Exception):
    """The SMS vendor could not take the message now; the outbox retries later."""


class SmsProvider(Protocol):
    def send(self, *, to: str, body: str, reference: str) -> None:
        """Send `body` to `to` (E.164); `reference` is the outbox key of the message."""


class LogSmsProvider:
    """Development only (production settings refuse it): keeps messages in a local file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, *, to: str, body: str, reference: str) -> None:
        line = json.dumps(
            {"at": utcnow().isoformat(), "to": to, "body": body, "reference": reference}
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line on an O_APPEND descriptor: concurrent workers do not interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class TwilioSmsProvider:
    """POST /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP basic auth."""

    # Twilio answers 400 when it refuses this message (invalid, unsubscribed or unreachable
    # number, bad body): retrying cannot help. Auth, rate limits and outages are retried.
    RETRIED = frozenset({401, 403, 404, 408, 409, 429})

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        api_base: str = "https://api.twilio.com",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sender = sender
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.transport = transport

    @property
    def url(self) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def send(self, *, to: str, body: str, reference: str) -> None:
        data = {"To": to, "Body": body}
        # A Messaging Service SID lets Twilio pick the sending number; else a number of ours.
        data["MessagingServiceSid" if self.sender.startswith("MG") else "From"] = self.sender
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.post(
                    self.url, data=data, auth=(self.account_sid, self.auth_token)
                )
        except httpx.HTTPError as exc:
            raise SmsUnavailable(f"Twilio unreachable: {type(exc).__name__}") from None
        if response.is_success:
            return
        said = redact(f"Twilio answered {response.status_code}: {_twilio_error(response)}", to)
        if 400 <= response.status_code < 500 and response.status_code not in self.RETRIED:
            raise PermanentFailure(said)
        raise SmsUnavailable(said)


def _twilio_error(response: httpx.Response) -> str:
    try:
        error: Any = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(error, dict):
        return f"error {error.get('code')}: {error.get('message')}"
    return str(error)[:300]


def _log_provider(settings: Settings) -> SmsProvider:
    return LogSmsProvider(settings.data_dir / "sms.log")


def _twilio_provider(settings: Settings) -> SmsProvider:
    # The settings refuse SMS_PROVIDER=twilio without these three.
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    return TwilioSmsProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        sender=settings.twilio_from,
        api_base=settings.twilio_api_base,
    )


PROVIDERS: dict[str, Callable[[Settings], SmsProvider]] = {
    "log": _log_provider,
    "twilio": _twilio_provider,
}


def sms_provider(settings: Settings) -> SmsProvider:
    return PROVIDERS[settings.sms_provider](settings)
