"""Notifications to patients: queued in the caller's transaction, delivered by the outbox worker.

`queue_email` / `queue_sms` check the template and its context at once (a mistake fails the
caller's test, not a worker at night) and write one outbox message. The payload holds the
template name in clear and, encrypted like PHI, the recipient and the context (a checkout link
carries a bearer token, which the database otherwise keeps only as a hash). The handlers decrypt,
render and send; the outbox retries, backs off and dead-letters.

The outbox key is `<topic>:<dedupe_key>`: the caller's key is unique per channel, so an e-mail
and an SMS about the same event may share it. Queueing the same key twice sends one message.
Keys are stored in clear and become the e-mail's Message-ID: never put PHI in them (an order id
and an event name, e.g. `checkout-link-<order id>`, are right).
"""

from __future__ import annotations

import json
import re
from email.errors import HeaderParseError
from email.headerregistry import Address

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import locks, phi
from app.config import get_settings
from app.errors import Unprocessable
from app.models import OutboxMessage
from app.notifications import templates
from app.notifications.mailer import EmailSender
from app.notifications.sms import sms_provider
from app.notifications.templates import Rendered, TemplateError
from app.outbox import service as outbox
from app.outbox.service import Claimed, PermanentFailure

EMAIL_TOPIC = "notification.email"
SMS_TOPIC = "notification.sms"
MAX_KEY_LENGTH = 160  # the outbox column holds 200 with the topic prefix

_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


class InvalidRecipient(Unprocessable):
    """The address or number cannot receive messages (its value is never in the detail)."""

    slug = "invalid-recipient"
    title = "The recipient cannot be reached"


def email_address(to: str) -> str:
    """A bare address (`user@domain`); a display name would put a patient's name in a header."""
    candidate = to.strip()
    try:
        address = Address(addr_spec=candidate)
    except (HeaderParseError, ValueError, IndexError):
        address = None
    if address is None or not address.username or "." not in address.domain:
        raise InvalidRecipient("the e-mail address is not a valid bare address (user@domain)")
    return address.addr_spec


def phone_number(to: str) -> str:
    """E.164 (`+15550100199`); spaces, dots, dashes and brackets are dropped."""
    candidate = _PHONE_PUNCTUATION.sub("", to)
    if not _E164.fullmatch(candidate):
        raise InvalidRecipient(
            "the phone number must be international, with its country code (+1 555 010 0199)"
        )
    return candidate


def outbox_key(topic: str, dedupe_key: str) -> str:
    if not _KEY.fullmatch(dedupe_key) or len(dedupe_key) > MAX_KEY_LENGTH:
        raise ValueError(f"dedupe_key must be 1-{MAX_KEY_LENGTH} printable ASCII characters")
    return f"{topic}:{dedupe_key}"


def _to_context(key: str) -> str:
    return f"outbox.{key}.to"


def _context_context(key: str) -> str:
    return f"outbox.{key}.context"


def _queue(
    session: Session, topic: str, to: str, template: str, context: dict[str, str], dedupe_key: str
) -> str:
    templates.render(template, context)  # refuses an unknown template or a bad context now
    key = outbox_key(topic, dedupe_key)
    outbox.enqueue(
        session,
        topic,
        key,
        {
            "template": template,
            "to": phi.encrypt(to, _to_context(key)),
            "context": phi.encrypt(json.dumps(context, sort_keys=True), _context_context(key)),
        },
    )
    return key


def queue_email(
    session: Session, *, to: str, template: str, context: dict[str, str], dedupe_key: str
) -> str:
    """Queue an e-mail in the caller's transaction; returns the outbox key.

    Raises `InvalidRecipient` (422) for an unusable address and `TemplateError` for an unknown
    template or a context it does not accept.
    """
    return _queue(session, EMAIL_TOPIC, email_address(to), template, context, dedupe_key)


def queue_sms(
    session: Session, *, to: str, template: str, context: dict[str, str], dedupe_key: str
) -> str:
    """Queue an SMS in the caller's transaction; returns the outbox key.

    `to` must carry its country code: patients' numbers may be stored in national form, which
    raises `InvalidRecipient` (422); catch it where a notification must not fail the flow.
    """
    return _queue(session, SMS_TOPIC, phone_number(to), template, context, dedupe_key)


def rotate_message_keys(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt the recipient and context of every message (queued, delivered or dead) not
    sealed by the active PHI key, so an old key can be retired; returns the messages changed.
    Resumable, like the patients' rotation; the caller commits."""
    notifications = select(OutboxMessage).where(OutboxMessage.topic.in_((EMAIL_TOPIC, SMS_TOPIC)))
    changed = 0
    messages: list[OutboxMessage]
    for messages in locks.in_id_batches(session, notifications, OutboxMessage.id, batch=batch):
        for message in messages:
            payload = dict(message.payload)
            for field, context_of in (("to", _to_context), ("context", _context_context)):
                value = payload.get(field)
                resealed = (
                    phi.reseal(value, context_of(message.dedupe_key))
                    if isinstance(value, str)
                    else None
                )
                if resealed is not None:
                    payload[field] = resealed
            if payload != message.payload:
                message.payload = payload
                changed += 1
        session.flush()
    return changed


def _open(message: Claimed) -> tuple[str, Rendered]:
    """The recipient and the rendered message. A payload that can never render is permanent;
    a PHI key this worker lacks is not (another worker, or a fixed deployment, may have it)."""
    key = message.dedupe_key
    try:
        to = phi.decrypt(message.payload["to"], _to_context(key))
        context = json.loads(phi.decrypt(message.payload["context"], _context_context(key)))
        return to, templates.render(message.payload["template"], context)
    except (KeyError, TypeError, json.JSONDecodeError, TemplateError) as exc:
        raise PermanentFailure(f"the message cannot be rendered: {exc}") from None


def deliver_email(message: Claimed) -> None:
    """Outbox handler for `notification.email`."""
    to, rendered = _open(message)
    EmailSender.from_settings(get_settings()).send(
        to=to, subject=rendered.subject, body=rendered.text, dedupe_key=message.dedupe_key
    )


def deliver_sms(message: Claimed) -> None:
    """Outbox handler for `notification.sms`."""
    to, rendered = _open(message)
    sms_provider(get_settings()).send(to=to, body=rendered.sms, reference=message.dedupe_key)


HANDLERS = {EMAIL_TOPIC: deliver_email, SMS_TOPIC: deliver_sms}
