"""The outbox: external calls that must happen, delivered at least once, never lost.

`enqueue` writes a message in the caller's transaction (so it exists exactly when the state change
that needs it commits). `deliver_due` claims due messages in a short transaction, performs each
call with no transaction or row lock open, then records the outcome: done, or retried with
exponential backoff and full jitter, or dead-lettered after `MAX_ATTEMPTS`. A worker killed
mid-call loses nothing: its claim lapses and another run delivers the message again, and the
receiver de-duplicates by the message's `dedupe_key`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from app import locks
from app.actor import Actor
from app.audit import service as audit
from app.errors import InvalidStateTransition, NotFound
from app.models import OutboxMessage
from app.models.base import table_of, utcnow
from app.models.status import OutboxStatus
from app.pagination import Keyset, KeysetPage

MAX_ATTEMPTS = 8
BASE_DELAY = timedelta(seconds=5)
MAX_DELAY = timedelta(hours=1)
CLAIM_LEASE = timedelta(minutes=2)


class PermanentFailure(Exception):
    """The receiver refused for good (e.g. a 4xx): retrying cannot help, dead-letter now."""


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    topic: str
    dedupe_key: str
    payload: dict[str, Any]
    attempts: int


# What a handler may hand back after a successful call: work recorded in the transaction that
# marks the message delivered (e.g. the audit row of a refund), so it happens exactly once.
OnDelivered = Callable[[Session], None]
Handler = Callable[[Claimed], OnDelivered | None]


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def enqueue(session: Session, topic: str, dedupe_key: str, payload: dict[str, Any]) -> None:
    """Add a message unless one with the same key exists (enqueueing twice is harmless)."""
    session.execute(
        insert(table_of(OutboxMessage))
        .values(id=uuid.uuid4(), topic=topic, dedupe_key=dedupe_key, payload=payload)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Delay before retry number `attempts`: exponential, capped, with full jitter."""
    ceiling: timedelta = min(MAX_DELAY, BASE_DELAY * (2 ** max(attempts - 1, 0)))
    jitter: float = (rng or random).uniform(0.5, 1.0)
    return ceiling * jitter


def claim_due(
    session: Session, topics: list[str], *, limit: int, now: datetime | None = None
) -> list[Claimed]:
    now = now or utcnow()
    messages = locks.claim_due_outbox_messages(session, topics, now=now, limit=limit)
    for message in messages:
        message.claimed_until = now + CLAIM_LEASE
    session.flush()
    return [Claimed(m.id, m.topic, m.dedupe_key, dict(m.payload), m.attempts) for m in messages]


def record_outcome(
    session: Session,
    message_id: uuid.UUID,
    error: str | None,
    *,
    permanent: bool = False,
    on_delivered: OnDelivered | None = None,
) -> OutboxStatus:
    message = locks.outbox_message(session, message_id)
    assert message is not None
    if message.status != OutboxStatus.PENDING:
        # Our claim lapsed and another worker already finished it: its outcome stands.
        return OutboxStatus(message.status)
    now = utcnow()
    message.attempts += 1
    message.claimed_until = None
    if error is None:
        message.status, message.delivered_at, message.last_error = OutboxStatus.DELIVERED, now, None
        if on_delivered is not None:
            on_delivered(session)
    elif permanent or message.attempts >= MAX_ATTEMPTS:
        message.status, message.last_error = OutboxStatus.DEAD, error[:2000]
    else:
        message.next_attempt_at = now + backoff(message.attempts)
        message.last_error = error[:2000]
    return OutboxStatus(message.status)


def deliver_due(
    sessions: sessionmaker[Session], handlers: Mapping[str, Handler], *, limit: int = 50
) -> DeliveryReport:
    report = DeliveryReport()
    with sessions.begin() as session:
        claimed = claim_due(session, list(handlers), limit=limit)
    for message in claimed:
        error, permanent, after = None, False, None
        try:
            after = handlers[message.topic](message)
        except PermanentFailure as exc:
            error, permanent = f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # any failure of the call is retried later
            error = f"{type(exc).__name__}: {exc}"
        try:
            with sessions.begin() as session:
                status = record_outcome(
                    session, message.id, error, permanent=permanent, on_delivered=after
                )
        except Exception as exc:
            # Recording what the call did failed: retry it (receivers de-duplicate by key).
            error = f"recording the delivery failed: {type(exc).__name__}: {exc}"
            with sessions.begin() as session:
                status = record_outcome(session, message.id, error)
        if status == OutboxStatus.DELIVERED:
            report.delivered += 1
        elif status == OutboxStatus.DEAD:
            report.dead += 1
            report.errors.append(error or "")
        else:
            report.retried += 1
            report.errors.append(error or "")
    return report


def resend(session: Session, actor: Actor, message_id: uuid.UUID) -> OutboxMessage:
    """An admin puts a dead-lettered message back in the queue."""
    message = locks.outbox_message(session, message_id)
    if message is None:
        raise NotFound("outbox message", message_id)
    if message.status != OutboxStatus.DEAD:
        raise InvalidStateTransition(
            f"only dead-lettered messages can be re-sent; this one is {message.status}",
            current_status=message.status,
        )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(
            status=OutboxStatus.PENDING, attempts=0, next_attempt_at=utcnow(), claimed_until=None
        )
    )
    session.refresh(message)
    audit.record(
        session,
        actor,
        "outbox.resent",
        "outbox_message",
        message.id,
        before={"status": OutboxStatus.DEAD},
        after={"status": OutboxStatus.PENDING, "topic": message.topic},
    )
    return message


NEWEST_FIRST = Keyset(OutboxMessage.created_at, OutboxMessage.id, descending=True)


def list_messages(
    session: Session, *, status: str | None, limit: int, cursor: str | None
) -> KeysetPage[OutboxMessage]:
    query = select(OutboxMessage)
    if status:
        query = query.where(OutboxMessage.status == status)
    return NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
