"""E-mail over SMTP (smtplib): the local sink in development, SES or any relay in production.

Each message gets a `Message-ID` derived from its outbox key, so a message delivered twice (a
worker that died after the server accepted it) is recognisably the same message. Errors are
sorted for the outbox: a 5xx refusal of the recipient or of the message is permanent (dead-letter
now), anything else (connection refused, timeouts, 4xx, authentication) is retried. Error texts
never carry the recipient's address: servers often echo it, and `last_error` is stored in clear.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from app.config import Settings
from app.models.base import utcnow
from app.outbox.service import PermanentFailure


class MailUnavailable(Exception):
    """The mail server could not take the message now; the outbox retries later."""


def message_id(dedupe_key: str, domain: str) -> str:
    """A stable, opaque Message-ID for an outbox message (the key itself is not revealed)."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def redact(text: str, address: str) -> str:
    return re.sub(re.escape(address), "[redacted]", text, flags=re.IGNORECASE)


def _server_says(code: int, response: bytes | str) -> str:
    text = response.decode(errors="replace") if isinstance(response, bytes) else response
    return f"{code} {text}".strip()


@dataclass(frozen=True)
class EmailSender:
    host: str
    port: int
    mail_from: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailSender:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            mail_from=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.mail_from)[1]

    @property
    def domain(self) -> str:
        return self.envelope_from.rpartition("@")[2] or "portal.localhost"

    def build(self, *, to: str, subject: str, body: str, dedupe_key: str) -> EmailMessage:
        message = EmailMessage(policy=SMTP)
        message["From"] = self.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = message_id(dedupe_key, self.domain)
        # Out-of-office and other robots must not answer an automated message (RFC 3834).
        message["Auto-Submitted"] = "auto-generated"
        message["X-Auto-Response-Suppress"] = "All"
        message.set_content(body)
        return message

    def send(self, *, to: str, subject: str, body: str, dedupe_key: str) -> str:
        """Hand the message to the server; returns its Message-ID."""
        message = self.build(to=to, subject=subject, body=body, dedupe_key=dedupe_key)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message, from_addr=self.envelope_from, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            replies = list(exc.recipients.values())
            said = redact("; ".join(_server_says(code, text) for code, text in replies), to)
            if replies and all(code >= 500 for code, _ in replies):
                raise PermanentFailure(f"the mail server refused the recipient: {said}") from None
            raise MailUnavailable(f"the mail server deferred the recipient: {said}") from None
        except smtplib.SMTPDataError as exc:
            said = redact(_server_says(exc.smtp_code, exc.smtp_error), to)
            if exc.smtp_code >= 500:
                raise PermanentFailure(f"the mail server refused the message: {said}") from None
            raise MailUnavailable(f"the mail server deferred the message: {said}") from None
        except smtplib.SMTPResponseException as exc:  # sender refused, authentication, ...
            said = redact(_server_says(exc.smtp_code, exc.smtp_error), to)
            raise MailUnavailable(f"{type(exc).__name__}: {said}") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS
            said = redact(str(exc), to)
            raise MailUnavailable(
                f"mail server {self.host}:{self.port} unreachable: {type(exc).__name__}: {said}"
            ) from None
        return str(message["Message-ID"])
