"""The audit log: one hash-chained row per create, update, delete and PHI read.

`record()` writes in the caller's transaction. Writers serialise on a transaction-scoped advisory
lock while they read the chain's head and append, so concurrent transactions never fork the chain;
the lock is released at commit or rollback. Services record last, so the lock is held briefly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from app.actor import Actor
from app.models import AuditEntry

GENESIS_HASH = "0" * 64
# Arbitrary constant identifying the audit chain's advisory lock.
AUDIT_CHAIN_LOCK = 0x5041_5544  # "PAUD"

REDACTED = "[redacted]"


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def snapshot(values: dict[str, Any] | None, *, redact: Collection[str] = ()) -> Any:
    """A JSON-safe copy of an entity's fields with the `redact` ones (PHI) replaced by a marker."""
    if values is None:
        return None
    return {
        k: (REDACTED if k in redact and v is not None else _plain(v)) for k, v in values.items()
    }


def _content(entry: AuditEntry) -> bytes:
    content = {
        "seq": entry.seq,
        "occurred_at": entry.occurred_at.astimezone(UTC).isoformat(),
        "actor_subject": entry.actor_subject,
        "actor_role": entry.actor_role,
        "action": entry.action,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
        "client_address": entry.client_address,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(entry: AuditEntry) -> str:
    return hashlib.sha256(_content(entry)).hexdigest()


def _append(
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: object,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    redact: Collection[str] = (),
) -> AuditEntry:
    """Append one row to the chain now (the caller holds the transaction open until commit)."""
    session.flush()  # the audited change first, so a failing change writes no audit row
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK})
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.row_hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq + 1, head.row_hash) if head else (1, GENESIS_HASH)
    entry = AuditEntry(
        seq=seq,
        # Microsecond precision survives the round trip through timestamptz, so the hash does.
        occurred_at=datetime.now(UTC),
        actor_subject=actor.subject,
        actor_role=str(actor.role),
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=snapshot(before, redact=redact),
        after=snapshot(after, redact=redact),
        request_id=actor.request_id,
        client_address=actor.client_address,
        prev_hash=prev_hash,
    )
    entry.row_hash = compute_hash(entry)
    session.add(entry)
    session.flush()
    return entry


PENDING_KEY = "portal_audit_pending"


def record(
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: object,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    redact: Collection[str] = (),
) -> None:
    """Record an audit row in this transaction: it joins the chain just before the commit.

    The chain's lock is then the last lock a transaction takes and is held only for the insert
    and the commit: a transaction holding it never waits for row locks, and concurrent writers
    are serialised for milliseconds instead of for the rest of their work.
    """
    pending = session.info.setdefault(PENDING_KEY, [])
    pending.append((actor, action, entity_type, entity_id, before, after, redact))


@event.listens_for(Session, "before_commit")
def _write_queued_audit_rows(session: Session) -> None:
    for actor, action, entity_type, entity_id, before, after, redact in session.info.pop(
        PENDING_KEY, []
    ):
        _append(
            session,
            actor,
            action,
            entity_type,
            entity_id,
            before=before,
            after=after,
            redact=redact,
        )


@event.listens_for(Session, "after_soft_rollback")
def _forget_queued_audit_rows(session: Session, previous_transaction: object) -> None:
    session.info.pop(PENDING_KEY, None)


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


@dataclass(frozen=True)
class VerificationResult:
    rows_checked: int
    head_hash: str
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def _stream(session: Session, batch: int = 5000) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify_chain(session: Session, progress: Any = None) -> VerificationResult:
    """Walk the chain from the first row; report the first row changed, deleted or reordered."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    for entry in _stream(session):
        if entry.seq != expected_seq:
            return VerificationResult(
                checked,
                prev_hash,
                ChainBreak(
                    expected_seq, f"row {expected_seq} is missing (next row is {entry.seq})"
                ),
            )
        if entry.prev_hash != prev_hash:
            return VerificationResult(
                checked,
                prev_hash,
                ChainBreak(
                    entry.seq, f"row {entry.seq} does not follow row {entry.seq - 1} (reordered?)"
                ),
            )
        if compute_hash(entry) != entry.row_hash:
            return VerificationResult(
                checked,
                prev_hash,
                ChainBreak(entry.seq, f"row {entry.seq} was changed after it was written"),
            )
        prev_hash = entry.row_hash
        expected_seq += 1
        checked += 1
        if progress is not None:
            progress(1)
    return VerificationResult(checked, prev_hash, None)
