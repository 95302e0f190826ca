"""The audit log: one hash-chained row per create, update, delete and PHI read.

`record()` writes the row in the caller's transaction, so it commits or rolls back with the
change it describes; no lock is taken there, so audited writes never queue behind each other.
The row is born unsealed. `seal()` (run by the worker every poll, and before every
verification) appends unsealed committed rows to the hash chain in insertion order, in a short
transaction of its own under an advisory lock, so there is one chain and it never forks. The
database allows exactly that one change to a row, once (see migration 0005).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ARRAY, BigInteger, String, bindparam, event, func, insert, select, text
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor
from app.models import AuditEntry
from app.models.base import table_of
from app.pagination import Keyset, KeysetPage

GENESIS_HASH = "0" * 64
# `verify` reports rows still unsealed after this long: the worker is not sealing.
SEAL_OVERDUE = timedelta(minutes=5)

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


HASHED_FIELDS = (
    "seq",
    "occurred_at",
    "actor_subject",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "request_id",
    "client_address",
    "prev_hash",
)


def chain_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 over a row's content and its place in the chain (`seq`, `prev_hash`)."""
    content = {name: fields[name] for name in HASHED_FIELDS}
    content["occurred_at"] = fields["occurred_at"].astimezone(UTC).isoformat()
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def compute_hash(entry: AuditEntry) -> str:
    return chain_hash({name: getattr(entry, name) for name in HASHED_FIELDS})


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
    """Record an audit row in this transaction (written, unsealed, just before the commit).

    Rows are queued and inserted together at commit, one statement per transaction; a
    transaction that rolls back writes none.
    """
    row = {
        # Microsecond precision survives the round trip through timestamptz, so the hash does.
        "occurred_at": datetime.now(UTC),
        "actor_subject": actor.subject,
        "actor_role": str(actor.role),
        "action": action,
        "entity_type": entity_type,
        "entity_id": str(entity_id),
        "before": snapshot(before, redact=redact),
        "after": snapshot(after, redact=redact),
        "request_id": actor.request_id,
        "client_address": actor.client_address,
    }
    session.info.setdefault(PENDING_KEY, []).append(row)


@event.listens_for(Session, "before_commit")
def _write_queued_audit_rows(session: Session) -> None:
    rows = session.info.pop(PENDING_KEY, [])
    if rows:
        session.flush()  # the audited changes first
        session.execute(insert(table_of(AuditEntry)), rows)


@event.listens_for(Session, "after_soft_rollback")
def _forget_queued_audit_rows(session: Session, previous_transaction: object) -> None:
    session.info.pop(PENDING_KEY, None)


# A batch of rows takes its place in the chain in one statement.
SEAL_ROWS = text(
    """
    UPDATE audit_log
    SET seq = sealed.seq, prev_hash = sealed.prev_hash, row_hash = sealed.row_hash
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]),
        CAST(:prev_hashes AS varchar[]), CAST(:row_hashes AS varchar[])
    ) AS sealed (id, seq, prev_hash, row_hash)
    WHERE audit_log.id = sealed.id AND audit_log.seq IS NULL
    """
).bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)),
    bindparam("seqs", type_=ARRAY(BigInteger)),
    bindparam("prev_hashes", type_=ARRAY(String)),
    bindparam("row_hashes", type_=ARRAY(String)),
)


def _unsealed_batch(session: Session, limit: int) -> list[dict[str, Any]]:
    columns = [AuditEntry.id, *(getattr(AuditEntry, n) for n in HASHED_FIELDS)]
    rows = session.execute(
        select(*columns).where(AuditEntry.seq.is_(None)).order_by(AuditEntry.id).limit(limit)
    )
    return [dict(row._mapping) for row in rows]


def chain_head(session: Session) -> tuple[int, str] | None:
    """`seq` and `row_hash` of the sealed chain's last row (None while nothing is sealed)."""
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.row_hash)
        .where(AuditEntry.seq.is_not(None))
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    if head is None or head.seq is None or head.row_hash is None:
        return None
    return head.seq, head.row_hash


def seal(session: Session, *, batch: int = 1000) -> int:
    """Append every committed unsealed row to the chain, in insertion order; returns how many.

    Takes the sealer's advisory lock for the rest of the transaction; if another sealer holds
    it, returns 0 at once (that one will seal these rows). The caller commits.
    """
    if not locks.try_audit_chain(session):
        return 0
    seq, prev_hash = chain_head(session) or (0, GENESIS_HASH)
    sealed = 0
    while rows := _unsealed_batch(session, batch):
        for row in rows:
            seq += 1
            row.update(seq=seq, prev_hash=prev_hash)
            row["row_hash"] = prev_hash = chain_hash(row)
        session.execute(
            SEAL_ROWS,
            {
                "ids": [row["id"] for row in rows],
                "seqs": [row["seq"] for row in rows],
                "prev_hashes": [row["prev_hash"] for row in rows],
                "row_hashes": [row["row_hash"] for row in rows],
            },
        )
        sealed += len(rows)
        if len(rows) < batch:
            break
    return sealed


def seal_in_own_transaction(sessions: Callable[[], Session]) -> int:
    """`seal()` in a transaction of its own, committed: for the worker and the CLI."""
    with sessions() as session, session.begin():
        return seal(session)


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


@dataclass(frozen=True)
class VerificationResult:
    rows_checked: int
    head_hash: str
    first_break: ChainBreak | None
    unsealed_rows: int = 0
    oldest_unsealed_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None

    @property
    def sealing_overdue(self) -> bool:
        """Rows written long ago are still outside the chain: is the worker running?"""
        oldest = self.oldest_unsealed_at
        return oldest is not None and datetime.now(UTC) - oldest > SEAL_OVERDUE


def _stream(session: Session, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Sealed rows in chain order, as plain mappings (nothing is kept in the session)."""
    columns = [*(getattr(AuditEntry, n) for n in HASHED_FIELDS), AuditEntry.row_hash]
    last = 0
    while True:
        rows = session.execute(
            select(*columns).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield dict(row._mapping)
        last = rows[-1].seq


def verify_chain(session: Session, progress: Any = None) -> VerificationResult:
    """Walk the sealed chain from the first row; report the first row changed, deleted or
    reordered, and how many rows still wait for the sealer."""
    unsealed, oldest = session.execute(
        select(func.count(), func.min(AuditEntry.occurred_at)).where(AuditEntry.seq.is_(None))
    ).one()
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0

    def result(first_break: ChainBreak | None) -> VerificationResult:
        return VerificationResult(checked, prev_hash, first_break, unsealed, oldest)

    for row in _stream(session):
        seq = row["seq"]
        if seq != expected_seq:
            return result(
                ChainBreak(expected_seq, f"row {expected_seq} is missing (next row is {seq})")
            )
        if row["prev_hash"] != prev_hash:
            return result(ChainBreak(seq, f"row {seq} does not follow row {seq - 1} (reordered?)"))
        if chain_hash(row) != row["row_hash"]:
            return result(ChainBreak(seq, f"row {seq} was changed after it was written"))
        prev_hash = row["row_hash"]
        expected_seq += 1
        checked += 1
        if progress is not None:
            progress(1)
    return result(None)


NEWEST_FIRST = Keyset(AuditEntry.id, descending=True)


def list_entries(
    session: Session,
    *,
    entity_type: str | None,
    entity_id: str | None,
    actor_subject: str | None,
    limit: int,
    cursor: str | None,
    action: str | None = None,
    actor_role: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> KeysetPage[AuditEntry]:
    """The log newest first (by insertion, so unsealed rows are listed too), optionally filtered.

    `action` is exact (`order.cancelled`) or, ending in a dot, a family (`order.`); the time
    window is `occurred_from` <= occurred_at < `occurred_to`.
    """
    query = select(AuditEntry)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if actor_subject:
        query = query.where(AuditEntry.actor_subject == actor_subject)
    if actor_role:
        query = query.where(AuditEntry.actor_role == actor_role)
    if action:
        if action.endswith("."):
            query = query.where(AuditEntry.action.startswith(action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == action)
    if occurred_from:
        query = query.where(AuditEntry.occurred_at >= occurred_from)
    if occurred_to:
        query = query.where(AuditEntry.occurred_at < occurred_to)
    return NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)


# The audit actions that record a read of PHI: a patient's details, an order's items (the
# patient's medications), the orders a list showed, prescriptions sent to a pharmacy.
PHI_READ_ACTIONS = (
    "patient.read",
    "order.read",
    "order.listed",
    "pharmacy_submission.read",
    "pharmacy_submission.listed",
    "pharmacy_log.read",
)


@dataclass(frozen=True)
class PhiReads:
    """One reader's PHI reads over a period."""

    actor_subject: str
    actor_role: str
    reads: int
    patients_read: int
    orders_read: int
    lists_read: int
    pharmacy_records_read: int
    first_at: datetime
    last_at: datetime


def phi_reads(
    session: Session,
    *,
    occurred_from: datetime,
    occurred_to: datetime,
    actor_role: str | None,
    limit: int,
) -> list[PhiReads]:
    """Who read PHI in [occurred_from, occurred_to), one row per reader (subject and role),
    most reads first: the access review. `patients_read` counts distinct patients."""
    query = (
        select(
            AuditEntry.actor_subject,
            AuditEntry.actor_role,
            func.count(),
            func.count(AuditEntry.entity_id.distinct()).filter(AuditEntry.action == "patient.read"),
            func.count().filter(AuditEntry.action == "order.read"),
            func.count().filter(AuditEntry.action == "order.listed"),
            func.count().filter(AuditEntry.action.startswith("pharmacy_")),
            func.min(AuditEntry.occurred_at),
            func.max(AuditEntry.occurred_at),
        )
        .where(
            AuditEntry.action.in_(PHI_READ_ACTIONS),
            AuditEntry.occurred_at >= occurred_from,
            AuditEntry.occurred_at < occurred_to,
        )
        .group_by(AuditEntry.actor_subject, AuditEntry.actor_role)
        .order_by(func.count().desc(), AuditEntry.actor_subject, AuditEntry.actor_role)
        .limit(limit)
    )
    if actor_role:
        query = query.where(AuditEntry.actor_role == actor_role)
    return [PhiReads(*row) for row in session.execute(query)]
