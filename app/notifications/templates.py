"""What the portal says to patients by e-mail and SMS, kept in code so it is reviewed like code.

A message carries a link, the order's status and a short reference, and nothing about health:
no product names, no patient names, no notes. The templates enforce it rather than trust the
caller: each context field has a validator that accepts only its shape (an 8-hex-digit
reference, a link to this portal, a timestamp, yes/no), so free text such as a product name
cannot reach a message through a context value, and unknown fields are refused.

Staff alerts (`staff_alerts`, from app/alerts) go to members of staff, not patients: they name
products, SKUs, lots, counts and dates (never PHI), as lines of plain text the alert's
producer wrote; each line is checked for its shape (one printable line, bounded length).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from app.config import get_settings
from app.models.status import AlertTopic

SIGNATURE = "This is an automated message from the ordering portal; replies are not read."


class TemplateError(ValueError):
    """A template was asked for with a context it does not accept (a programming error)."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str  # the e-mail body (plain text)
    sms: str


def order_reference(order_id: uuid.UUID) -> str:
    """The short reference a patient sees, in messages and on the pages alike: the first 8
    characters of the order id, upper case."""
    return str(order_id)[:8].upper()


_REFERENCE = re.compile(r"[0-9A-F]{8}")
_UNSAFE_IN_URL = re.compile(r"[\s<>\"'\\\x00-\x1f\x7f]")


def _reference(value: str) -> str:
    if not _REFERENCE.fullmatch(value):
        raise TemplateError(
            "order_reference must be the first 8 characters of the order id, upper case"
        )
    return value


def _portal_link(value: str) -> str:
    """A link into this portal (same scheme and host as PUBLIC_BASE_URL), nothing else."""
    if len(value) > 2000 or _UNSAFE_IN_URL.search(value):
        raise TemplateError("a link must be a plain URL")
    base = urlsplit(get_settings().public_base_url)
    url = urlsplit(value)
    if (url.scheme, url.netloc) != (base.scheme, base.netloc) or url.username or url.password:
        raise TemplateError(f"a link must point into the portal ({base.scheme}://{base.netloc})")
    return value


def _timestamp(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise TemplateError("a time must be an ISO 8601 timestamp") from exc
    if moment.tzinfo is None:
        raise TemplateError("a time must carry its time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _yes_no(value: str) -> str:
    if value not in ("yes", "no"):
        raise TemplateError("refunded must be 'yes' or 'no'")
    return value


MAX_ALERT_LINES = 25
MAX_ALERT_LINE = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _alert_topic(value: str) -> str:
    if value not in AlertTopic.__members__.values():
        raise TemplateError(f"alert_topic must be one of {', '.join(AlertTopic)}")
    return value


def _count(value: str) -> str:
    if not value.isascii() or not value.isdigit() or int(value) < 1 or len(value) > 9:
        raise TemplateError("alert_count must be a positive whole number")
    return str(int(value))


def _alert_lines(value: str) -> str:
    """Newline-separated summaries: each one printable line of at most MAX_ALERT_LINE."""
    lines = value.split("\n")
    if not value or len(lines) > MAX_ALERT_LINES:
        raise TemplateError(f"alert_lines must hold 1-{MAX_ALERT_LINES} lines")
    for line in lines:
        if not line.strip() or len(line) > MAX_ALERT_LINE or _CONTROL.search(line):
            raise TemplateError(
                f"each alert line must be printable text of 1-{MAX_ALERT_LINE} characters"
            )
    return value


# One rule per field name, shared by every template that uses the field.
FIELDS: dict[str, Callable[[str], str]] = {
    "order_reference": _reference,
    "checkout_url": _portal_link,
    "status_url": _portal_link,
    "orders_url": _portal_link,
    "expires_at": _timestamp,
    "refunded": _yes_no,
    "alert_topic": _alert_topic,
    "alert_count": _count,
    "alert_lines": _alert_lines,
    "alerts_url": _portal_link,
}


@dataclass(frozen=True)
class Template:
    name: str
    required: frozenset[str]
    optional: frozenset[str]
    build: Callable[[Mapping[str, str]], Rendered]


def _checkout_link(c: Mapping[str, str]) -> Rendered:
    ref = c.get("order_reference")
    ref_line = f"\nOrder reference: {ref}\n" if ref else ""
    return Rendered(
        subject=f"Your order {ref} is ready for payment"
        if ref
        else "Your order is ready for payment",
        text=(
            "Hello,\n\n"
            "An order has been prepared for you. Its status: awaiting payment.\n"
            f"{ref_line}\n"
            "Review it and pay securely here:\n"
            f"{c['checkout_url']}\n\n"
            f"This link is personal and expires on {c['expires_at']}. Please do not forward it.\n"
            "If you were not expecting this message, you can ignore it.\n\n"
            f"-- \n{SIGNATURE}\n"
        ),
        sms=(
            f"Your order{' ' + ref if ref else ''} is awaiting payment. Review and pay securely:"
            f" {c['checkout_url']} (personal link, expires {c['expires_at']})"
        ),
    )


def _payment_received(c: Mapping[str, str]) -> Rendered:
    ref = c["order_reference"]
    return Rendered(
        subject=f"Payment received for order {ref}",
        text=(
            "Hello,\n\n"
            f"We have received your payment for order {ref}. Its status: paid.\n\n"
            "Follow your order here:\n"
            f"{c['status_url']}\n\n"
            f"-- \n{SIGNATURE}\n"
        ),
        sms=f"Payment received for order {ref}. Status: paid. Follow it: {c['status_url']}",
    )


def _order_cancelled(c: Mapping[str, str]) -> Rendered:
    ref = c["order_reference"]
    refund = (
        "Your payment is being refunded to the method you paid with; it usually appears"
        " within 5-10 business days."
        if c["refunded"] == "yes"
        else "No refund applies to this order."
    )
    link = f"\nDetails:\n{c['status_url']}\n" if "status_url" in c else ""
    return Rendered(
        subject=f"Order {ref} has been cancelled",
        text=(
            "Hello,\n\n"
            f"Order {ref} has been cancelled. Its status: cancelled.\n"
            f"{refund}\n"
            f"{link}\n"
            f"-- \n{SIGNATURE}\n"
        ),
        sms=" ".join(
            [f"Order {ref} has been cancelled."]
            + (["Your payment is being refunded."] if c["refunded"] == "yes" else [])
            + ([f"Details: {c['status_url']}"] if "status_url" in c else [])
        ),
    )


def _orders_link(c: Mapping[str, str]) -> Rendered:
    return Rendered(
        subject="Your orders: the link you asked for",
        text=(
            "Hello,\n\n"
            "You asked to see your orders and their status. Open them here:\n"
            f"{c['orders_url']}\n\n"
            f"This link is personal and expires on {c['expires_at']}. Please do not forward it.\n"
            "If you did not ask for it, you can ignore this message.\n\n"
            f"-- \n{SIGNATURE}\n"
        ),
        sms=f"Your orders: {c['orders_url']} (personal link, expires {c['expires_at']})",
    )


ALERT_TOPIC_NAMES = {
    AlertTopic.STOCK: "stock",
    AlertTopic.RECONCILIATION: "payment reconciliation",
    AlertTopic.DATA_QUALITY: "data quality",
    AlertTopic.PHARMACY: "pharmacy",
}


def _staff_alerts(c: Mapping[str, str]) -> Rendered:
    """New alerts of one topic for a member of staff: one message per sweep that opened any."""
    topic = ALERT_TOPIC_NAMES[AlertTopic(c["alert_topic"])]
    count = int(c["alert_count"])
    lines = c["alert_lines"].split("\n")
    first = lines[0]
    subject = (
        f"Portal {topic} alert: {first}"
        if count == 1
        else f"Portal {topic} alerts: {count} new conditions"
    )
    more = f" (+{count - 1} more)" if count > 1 else ""
    heading = (
        f"A new {topic} condition needs attention"
        if count == 1
        else f"{count} new {topic} conditions need attention"
    )
    return Rendered(
        subject=subject[:200],
        text=(
            "Hello,\n\n"
            f"{heading}:\n\n"
            + "".join(f"- {line}\n" for line in lines)
            + "\nYou will not be told again while a condition persists; if it clears and comes"
            " back, you will be.\n"
            f"Open alerts: {c['alerts_url']}\n\n"
            "You receive this because you subscribed to these alerts"
            " (PUT /api/v1/users/me/alert-subscriptions changes that).\n\n"
            f"-- \n{SIGNATURE}\n"
        ),
        sms=f"Portal {topic} alert: {first}{more}"[:320],
    )


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "checkout_link",
            required=frozenset({"checkout_url", "expires_at"}),
            optional=frozenset({"order_reference"}),
            build=_checkout_link,
        ),
        Template(
            "payment_received",
            required=frozenset({"order_reference", "status_url"}),
            optional=frozenset(),
            build=_payment_received,
        ),
        Template(
            "order_cancelled",
            required=frozenset({"order_reference", "refunded"}),
            optional=frozenset({"status_url"}),
            build=_order_cancelled,
        ),
        Template(
            "orders_link",
            required=frozenset({"orders_url", "expires_at"}),
            optional=frozenset(),
            build=_orders_link,
        ),
    )
}


# What staff are told (app/alerts): kept apart from the patients' messages above.
STAFF_TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "staff_alerts",
            required=frozenset({"alert_topic", "alert_count", "alert_lines", "alerts_url"}),
            optional=frozenset(),
            build=_staff_alerts,
        ),
    )
}


def render(name: str, context: Mapping[str, str]) -> Rendered:
    """The message `name` with `context`; `TemplateError` unless every field is as expected."""
    template = TEMPLATES.get(name) or STAFF_TEMPLATES.get(name)
    if template is None:
        known = ", ".join(sorted({*TEMPLATES, *STAFF_TEMPLATES}))
        raise TemplateError(f"unknown template {name!r}; known: {known}")
    missing = template.required - context.keys()
    unknown = context.keys() - template.required - template.optional
    if missing or unknown:
        raise TemplateError(
            f"template {name!r}: missing {sorted(missing)}, not accepted {sorted(unknown)}"
        )
    values: dict[str, str] = {}
    for field, value in context.items():
        if not isinstance(value, str):
            raise TemplateError(f"template {name!r}: {field} must be a string")
        values[field] = FIELDS[field](value)
    return template.build(values)
