"""Audit anchors: the chain's head written outside the database.

The hash chain shows any change, deletion or reordering of a row, but not that the newest rows
were deleted, nor a chain rewritten consistently from some row on by someone who can bypass the
database's guards: what is left still verifies. An anchor (`seq`, `row_hash`, when) kept where
the database's users cannot rewrite it catches both: the anchored row must still be there with
the anchored hash. In production the anchor directory is write-once storage (for example a
bucket with object lock), one folder per database; `portal worker` writes an anchor every
AUDIT_ANCHOR_EVERY_SECONDS, `portal audit anchor` on demand, and `portal audit verify` checks
every anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.service import ChainBreak, chain_head
from app.models import AuditEntry


@dataclass(frozen=True)
class Anchor:
    seq: int
    row_hash: str
    anchored_at: datetime

    def as_json(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "row_hash": self.row_hash,
                "anchored_at": self.anchored_at.isoformat(),
            },
            sort_keys=True,
        )


class AnchorConflict(Exception):
    """An anchor for this row already exists with another hash: the chain was rewritten."""


def anchor_directory(session: Session, root: Path) -> Path:
    """The database's own folder under AUDIT_ANCHOR_DIR, so that environments (and test
    databases) sharing one anchor store never mix their anchors."""
    name = str(session.scalar(select(func.current_database())) or "")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"unexpected database name {name!r}")
    return root / name


def write_anchor(directory: Path, anchor: Anchor) -> Path:
    """Write the anchor as a new file (never replacing one). Writing the same row's anchor again
    is a no-op; a different hash for an anchored row raises `AnchorConflict`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"anchor-{anchor.seq:015d}.json"
    try:
        with path.open("x") as file:
            file.write(anchor.as_json())
    except FileExistsError:
        existing = read_anchor(path)
        if existing.row_hash != anchor.row_hash:
            raise AnchorConflict(
                f"row {anchor.seq} was anchored on {existing.anchored_at:%Y-%m-%d %H:%M} UTC"
                " with another hash"
            ) from None
    return path


def anchor_head(session: Session, root: Path) -> tuple[Anchor, Path] | None:
    """Write the sealed chain's last row as an anchor in this database's folder under `root`;
    None while nothing is sealed. Seal first to anchor what was just written."""
    last = chain_head(session)
    if last is None:
        return None
    anchor = Anchor(*last, datetime.now(UTC))
    return anchor, write_anchor(anchor_directory(session, root), anchor)


def read_anchor(path: Path) -> Anchor:
    data = json.loads(path.read_text())
    return Anchor(
        int(data["seq"]), str(data["row_hash"]), datetime.fromisoformat(data["anchored_at"])
    )


def read_anchors(directory: Path) -> list[Anchor]:
    if not directory.is_dir():
        return []
    return sorted((read_anchor(p) for p in directory.glob("anchor-*.json")), key=lambda a: a.seq)


def check_anchors(session: Session, anchors: list[Anchor]) -> ChainBreak | None:
    """The first anchor the chain no longer honours: its row missing (the newest rows were
    deleted) or holding another hash (the chain was rewritten from there or earlier)."""
    rows = session.execute(
        select(AuditEntry.seq, AuditEntry.row_hash).where(
            AuditEntry.seq.in_([a.seq for a in anchors])
        )
    )
    hashes = {seq: row_hash for seq, row_hash in rows}
    for anchor in anchors:
        row_hash = hashes.get(anchor.seq)
        when = f"{anchor.anchored_at:%Y-%m-%d %H:%M} UTC"
        if row_hash is None:
            return ChainBreak(
                anchor.seq,
                f"row {anchor.seq}, anchored on {when}, is missing: the newest rows were deleted",
            )
        if row_hash != anchor.row_hash:
            return ChainBreak(
                anchor.seq,
                f"row {anchor.seq} differs from its anchor of {when}: the chain was rewritten",
            )
    return None
