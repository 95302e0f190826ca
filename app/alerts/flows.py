"""Syncing a topic's alerts, with what it causes: the subscribers of newly opened conditions
are told, once, through the notifications outbox.

`sync_alerts` is what every producer calls (the stock sweep, payment reconciliation, the data
quality checks; from Dagster, the CLI or tests). It runs in the caller's transaction, so the
alerts and their messages are written together or not at all; the caller commits. Call it last
in a transaction: it holds the topic's lock (app.locks) until the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from app.alerts import service
from app.alerts.service import AlertSync, Condition, OpenedAlert
from app.config import get_settings
from app.models.base import utcnow
from app.models.status import AlertTopic
from app.notifications import service as notifications
from app.notifications.service import InvalidRecipient

# Conditions listed in one message; the rest are counted ("and 40 more") and in the admin list.
MAX_LISTED = 20
TEMPLATE = "staff_alerts"

__all__ = ["AlertSync", "Condition", "sync_alerts"]


def sync_alerts(
    session: Session,
    topic: AlertTopic,
    current: Iterable[Condition],
    *,
    now: datetime | None = None,
    key_prefix: str = "",
) -> AlertSync:
    """Make the topic's open alerts match `current`, the full set of its conditions true now.

    A condition not open yet is opened and its subscribers get one message (e-mail, and SMS
    where they gave a number) listing every condition this sync opened; an open one still
    current changes nothing; an open one no longer current is cleared; a cleared one that comes
    back is a new alert and is told again. `key_prefix` narrows the sync to the conditions whose
    keys start with it (a producer that checks one part of a topic at a time), so the others are
    neither cleared nor touched. Raises ValueError for two conditions with one key.
    """
    topic = AlertTopic(topic)
    changes = service.sync(session, topic, current, now=now or utcnow(), key_prefix=key_prefix)
    queued = _tell_subscribers(session, topic, changes.opened)
    return AlertSync(
        opened=len(changes.opened),
        cleared=len(changes.cleared_keys),
        still_open=changes.still_open,
        opened_keys=tuple(alert.key for alert in changes.opened),
        cleared_keys=tuple(changes.cleared_keys),
        notifications=queued,
    )


def alerts_url(topic: AlertTopic) -> str:
    """Where an admin sees the topic's open alerts (the API's list)."""
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/api/v1/alerts?topic={topic.value}&state=open"


def _tell_subscribers(session: Session, topic: AlertTopic, opened: list[OpenedAlert]) -> int:
    """One message per subscriber and channel for everything this sync opened; returns how
    many were queued. The outbox key names the first alert opened and the person, so a retried
    delivery (or a re-run of a committed sweep, which opens nothing) sends nothing twice."""
    if not opened:
        return 0
    people = service.subscribers(session, topic)
    if not people:
        return 0
    lines = [alert.summary for alert in opened[:MAX_LISTED]]
    if len(opened) > MAX_LISTED:
        lines.append(f"... and {len(opened) - MAX_LISTED} more (see the open alerts)")
    context = {
        "alert_topic": topic.value,
        "alert_count": str(len(opened)),
        "alert_lines": "\n".join(lines),
        "alerts_url": alerts_url(topic),
    }
    first = min(alert.id for alert in opened)
    queued = 0
    for person in people:
        key = f"alerts-opened-{first}-{person.user_id}"
        for send, to in (
            (notifications.queue_email, person.email),
            (notifications.queue_sms, person.sms_to),
        ):
            if to is None:
                continue
            try:
                send(session, to=to, template=TEMPLATE, context=context, dedupe_key=key)
            except InvalidRecipient:
                continue  # checked when subscribing; an address that stopped working is skipped
            queued += 1
    return queued
