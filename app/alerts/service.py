"""Alerts to staff: conditions opened once, cleared when they end; and who hears about them.

A producer (the stock sweep, reconciliation, data-quality checks) hands `sync` the full set of
conditions true now for one topic. A condition not open yet is opened (a new row); one that is
open and still current changes nothing; an open one that is no longer current is cleared. A
cleared condition that comes back is a new alert. One sweep of a topic at a time holds the
topic's lock (app.locks), and the partial unique index on open alerts is the backstop, so
overlapping sweeps open a condition once.

Subscriptions say which topics a member of staff hears about, by e-mail (their account's
address) and/or SMS (a number stored encrypted like PHI). Admins may hear about every topic,
doctors about stock only; deactivated users hear nothing. Nothing here commits.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import (
    ARRAY,
    DateTime,
    String,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from app import locks, phi
from app.actor import Actor
from app.audit import service as audit
from app.errors import Conflict, Forbidden, NotFound
from app.models import Alert, AlertSubscription, User
from app.models.base import utcnow
from app.models.status import AlertState, AlertTopic, StaffRole
from app.notifications.service import phone_number
from app.pagination import Keyset, KeysetPage

MAX_KEY_LENGTH = 200
MAX_SUMMARY_LENGTH = 300
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: keys appear in URLs and logs
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
INSERT_BATCH = 5000

# Which topics a role may subscribe to (and is told about).
ROLE_TOPICS: dict[StaffRole, frozenset[AlertTopic]] = {
    StaffRole.ADMIN: frozenset(AlertTopic),
    StaffRole.DOCTOR: frozenset({AlertTopic.STOCK}),
}


@dataclass(frozen=True)
class Condition:
    """One condition true now: `key` is stable for as long as it holds (e.g.
    `low-stock:<product id>`); `summary` is one line for people; `details` are JSON-safe
    facts (products, SKUs, lots, counts, dates). None of them may hold PHI."""

    key: str
    summary: str
    details: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key) or len(self.key) > MAX_KEY_LENGTH:
            raise ValueError(
                f"a condition's key must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
                f" without spaces: {self.key!r}"
            )
        if (
            not self.summary.strip()
            or len(self.summary) > MAX_SUMMARY_LENGTH
            or _CONTROL.search(self.summary)
        ):
            raise ValueError(
                f"a condition's summary must be one printable line of 1-{MAX_SUMMARY_LENGTH}"
                f" characters (condition {self.key})"
            )
        try:
            json.dumps(self.details, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"condition {self.key}: details must be JSON-safe: {exc}") from None


@dataclass(frozen=True)
class AlertSync:
    """What one sync of a topic did: conditions opened (their subscribers notified), cleared,
    and still open from an earlier sync; `notifications` is the messages queued."""

    opened: int
    cleared: int
    still_open: int
    opened_keys: tuple[str, ...] = ()
    cleared_keys: tuple[str, ...] = ()
    notifications: int = 0


@dataclass(frozen=True)
class OpenedAlert:
    id: uuid.UUID
    key: str
    summary: str


@dataclass(frozen=True)
class Changes:
    opened: list[OpenedAlert]
    cleared_keys: list[str]
    still_open: int


def one_line(text: str, limit: int = MAX_SUMMARY_LENGTH) -> str:
    """`text` as one printable line of at most `limit` characters (names typed by people may
    hold line breaks or tabs): control characters become spaces, long text is cut with an
    ellipsis."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _json_default(value: Any) -> Any:
    """What JSON lacks, for an alert's details: dates and times in ISO 8601, ids and decimals
    as text (str enums and tuples are JSON already)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"an alert's details cannot hold a {type(value).__name__}")


# New alerts of one topic in one statement (one JSON document expanded by the server: no
# per-row SQL to compile, no parameters to adapt). An open alert of the same key that appeared
# meanwhile wins (the partial unique index), and only the rows actually written come back.
OPEN_ALERTS = text(
    """
    INSERT INTO alerts (id, topic, key, summary, details, opened_at)
    SELECT gen_random_uuid(), :topic, c.doc ->> 'key', c.doc ->> 'summary', c.doc -> 'details',
        :now
    FROM jsonb_array_elements(CAST(:conditions AS jsonb)) WITH ORDINALITY AS c (doc, n)
    ORDER BY c.n
    ON CONFLICT (topic, key) WHERE cleared_at IS NULL DO NOTHING
    RETURNING id, key
    """
).bindparams(
    bindparam("conditions", type_=String),
    bindparam("topic", type_=String),
    bindparam("now", type_=DateTime(timezone=True)),
)


def _by_key(conditions: Iterable[Condition], key_prefix: str) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for condition in conditions:
        if condition.key in found:
            raise ValueError(f"two conditions share the key {condition.key!r}")
        if not condition.key.startswith(key_prefix):
            raise ValueError(f"condition {condition.key!r} is outside the scope {key_prefix!r}")
        found[condition.key] = condition
    return found


def sync(
    session: Session,
    topic: AlertTopic,
    current: Iterable[Condition],
    *,
    now: datetime,
    key_prefix: str = "",
) -> Changes:
    """Open the current conditions not open yet, clear the open ones no longer current (only
    those whose key starts with `key_prefix`, when given). Holds the topic's lock until the
    caller's transaction ends."""
    topic = AlertTopic(topic)
    conditions = _by_key(current, key_prefix)
    locks.alert_topic(session, topic)
    in_scope = and_(
        Alert.topic == topic,
        Alert.cleared_at.is_(None),
        Alert.key.startswith(key_prefix, autoescape=True),
    )
    open_keys = set(session.scalars(select(Alert.key).where(in_scope)))
    new = [condition for key, condition in conditions.items() if key not in open_keys]
    opened: list[OpenedAlert] = []
    for begin in range(0, len(new), INSERT_BATCH):
        batch = new[begin : begin + INSERT_BATCH]
        inserted = {
            row.key: row.id
            for row in session.execute(
                OPEN_ALERTS,
                {
                    "topic": topic.value,
                    "now": now,
                    "conditions": json.dumps(
                        [{"key": c.key, "summary": c.summary, "details": c.details} for c in batch],
                        default=_json_default,
                        allow_nan=False,
                    ),
                },
            )
        }
        opened.extend(
            OpenedAlert(inserted[c.key], c.key, c.summary) for c in batch if c.key in inserted
        )
    gone = sorted(open_keys - conditions.keys())
    cleared: list[str] = []
    if gone:
        cleared = list(
            session.scalars(
                update(Alert)
                # One array parameter, however many keys (an IN list would be one each).
                .where(in_scope, Alert.key == any_(cast(gone, ARRAY(String))))
                .values(cleared_at=func.greatest(Alert.opened_at, now))
                .returning(Alert.key)
                .execution_options(synchronize_session=False)
            )
        )
    # A condition another sweep opened meanwhile (the index gave way) is open all the same.
    raced = len(new) - len(opened)
    return Changes(opened, sorted(cleared), len(open_keys & conditions.keys()) + raced)


# -- who hears about a topic ---------------------------------------------------------------------
def roles_told_about(topic: AlertTopic) -> list[str]:
    return sorted(role.value for role, topics in ROLE_TOPICS.items() if topic in topics)


def sms_context(subscription_id: uuid.UUID) -> str:
    return f"alert_subscriptions.sms_to.{subscription_id}"


@dataclass(frozen=True)
class Subscriber:
    user_id: uuid.UUID
    email: str | None  # None: not by e-mail (not chosen, or the account has no address)
    sms_to: str | None


def subscribers(session: Session, topic: AlertTopic) -> list[Subscriber]:
    """Active users subscribed to `topic` whose role may hear about it, with their channels."""
    rows = session.execute(
        select(
            AlertSubscription.id,
            AlertSubscription.user_id,
            AlertSubscription.by_email,
            AlertSubscription.sms_to_encrypted,
            User.email,
        )
        .join(User, User.id == AlertSubscription.user_id)
        .where(
            AlertSubscription.topic == topic,
            User.active.is_(True),
            User.role.in_(roles_told_about(topic)),
        )
        .order_by(AlertSubscription.user_id)
    ).all()
    return [
        Subscriber(
            user_id=row.user_id,
            email=row.email if row.by_email else None,
            sms_to=(
                phi.decrypt(row.sms_to_encrypted, sms_context(row.id))
                if row.sms_to_encrypted
                else None
            ),
        )
        for row in rows
    ]


# -- a user's own subscriptions ----------------------------------------------------------------
@dataclass(frozen=True)
class Channels:
    email: bool
    sms_to: str | None


def topics_for(role: str) -> list[AlertTopic]:
    """The topics a role may subscribe to, in the enum's order."""
    allowed = ROLE_TOPICS.get(StaffRole(role), frozenset()) if role in set(StaffRole) else set()
    return [topic for topic in AlertTopic if topic in allowed]


def _user(session: Session, user_id: uuid.UUID | None, *, lock: bool = False) -> User:
    user = None
    if user_id is not None:
        user = locks.user(session, user_id) if lock else session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not user.active:  # the sign-in refuses them already; a direct caller too
        raise Forbidden("your portal account is deactivated")
    return user


def subscriptions_of(session: Session, user_id: uuid.UUID) -> dict[AlertTopic, Channels]:
    rows = session.scalars(
        select(AlertSubscription).where(AlertSubscription.user_id == user_id)
    ).all()
    return {
        AlertTopic(row.topic): Channels(
            email=row.by_email,
            sms_to=phi.decrypt(row.sms_to_encrypted, sms_context(row.id))
            if row.sms_to_encrypted
            else None,
        )
        for row in sorted(rows, key=lambda r: list(AlertTopic).index(AlertTopic(r.topic)))
    }


def my_subscriptions(session: Session, actor: Actor) -> tuple[User, dict[AlertTopic, Channels]]:
    user = _user(session, actor.user_id)
    return user, subscriptions_of(session, user.id)


def _audit_view(subscriptions: Mapping[AlertTopic, Channels]) -> dict[str, Any]:
    # The number is personal data: the audit log says whether there is one, not which.
    return {
        topic.value: {"email": channels.email, "sms": channels.sms_to is not None}
        for topic, channels in subscriptions.items()
    }


def replace_subscriptions(
    session: Session, actor: Actor, wanted: Mapping[AlertTopic, Channels]
) -> tuple[User, dict[AlertTopic, Channels]]:
    """The signed-in user's subscriptions become exactly `wanted` (a topic with neither channel
    is not subscribed). Refuses a topic the user's role may not hear about (403) and e-mail for
    an account without an address (409)."""
    user = _user(session, actor.user_id, lock=True)
    allowed = set(topics_for(user.role))
    refused = sorted(topic.value for topic in wanted if topic not in allowed)
    if refused:
        raise Forbidden(
            f"a {user.role} may subscribe to {', '.join(sorted(allowed)) or 'no topic'};"
            f" not to {', '.join(refused)}",
            allowed_topics=sorted(allowed),
        )
    normalised = {
        topic: Channels(
            email=channels.email,
            sms_to=phone_number(channels.sms_to) if channels.sms_to else None,
        )
        for topic, channels in wanted.items()
        if channels.email or channels.sms_to
    }
    if user.email is None and any(channels.email for channels in normalised.values()):
        raise Conflict(
            "your account has no e-mail address; subscribe by SMS, or ask an administrator"
            " to add your address",
            field="email",
        )
    before = subscriptions_of(session, user.id)
    if before == normalised:
        return user, before
    existing = {
        AlertTopic(row.topic): row
        for row in session.scalars(
            select(AlertSubscription).where(AlertSubscription.user_id == user.id)
        )
    }
    dropped = [row.id for topic, row in existing.items() if topic not in normalised]
    if dropped:
        session.execute(delete(AlertSubscription).where(AlertSubscription.id.in_(dropped)))
    now = utcnow()
    for topic, channels in normalised.items():
        row = existing.get(topic)
        if row is None:
            row = AlertSubscription(id=uuid.uuid4(), user_id=user.id, topic=topic)
            session.add(row)
        elif before.get(topic) == channels:
            continue
        row.by_email = channels.email
        row.sms_to_encrypted = (
            phi.encrypt(channels.sms_to, sms_context(row.id)) if channels.sms_to else None
        )
        row.updated_at = now
    session.flush()
    audit.record(
        session,
        actor,
        "alert_subscriptions.replaced",
        "user",
        user.id,
        before=_audit_view(before),
        after=_audit_view(normalised),
    )
    return user, normalised


def rotate_subscription_keys(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt the SMS numbers not sealed by the active PHI key (`portal keys rotate`), so
    an old key can be retired; returns the subscriptions changed. Resumable; the caller
    commits."""
    with_numbers = select(AlertSubscription).where(AlertSubscription.sms_to_encrypted.is_not(None))
    changed = 0
    rows: list[AlertSubscription]
    for rows in locks.in_id_batches(session, with_numbers, AlertSubscription.id, batch=batch):
        for row in rows:
            assert row.sms_to_encrypted is not None
            resealed = phi.reseal(row.sms_to_encrypted, sms_context(row.id))
            if resealed is not None:
                row.sms_to_encrypted = resealed
                changed += 1
        session.flush()
    return changed


# -- the admin list ------------------------------------------------------------------------------
NEWEST_FIRST = Keyset(Alert.opened_at, Alert.id, descending=True)


def list_alerts(
    session: Session,
    actor: Actor,
    *,
    topic: AlertTopic | None,
    state: AlertState | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[Alert]:
    """Alerts newest first, by topic and state; each alert returned is audited as read."""
    query = select(Alert)
    if topic is not None:
        query = query.where(Alert.topic == topic)
    if state == AlertState.OPEN:
        query = query.where(Alert.cleared_at.is_(None))
    elif state == AlertState.CLEARED:
        query = query.where(Alert.cleared_at.is_not(None))
    page = NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
    for alert in page.rows:
        audit.record(session, actor, "alert.read", "alert", alert.id)
    return page


def state_of(alert: Alert) -> AlertState:
    return AlertState.OPEN if alert.cleared_at is None else AlertState.CLEARED


def open_alerts(session: Session, topic: AlertTopic) -> Sequence[Alert]:
    """The topic's open alerts, oldest first (the CLI's report)."""
    return session.scalars(
        select(Alert)
        .where(Alert.topic == topic, Alert.cleared_at.is_(None))
        .order_by(Alert.opened_at, Alert.key)
    ).all()
