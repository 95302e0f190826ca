"""Audit anchors: the chain's head kept outside the database catches what the chain alone
cannot, the newest rows deleted and a chain rewritten consistently from some row on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.audit import service as audit
from app.audit.anchors import (
    Anchor,
    AnchorConflict,
    anchor_head,
    check_anchors,
    read_anchors,
    write_anchor,
)
from app.audit.service import HASHED_FIELDS, chain_hash, verify_chain
from app.db import make_engine
from app.models import AuditEntry
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase

WRITER = Actor.system("anchor-test")


@pytest.fixture
def engine(fresh_db: TestDatabase) -> Iterator[Engine]:
    engine = make_engine(fresh_db.app_url, pool_size=2)
    yield engine
    engine.dispose()


def write_rows(engine: Engine, count: int, prefix: str = "row") -> None:
    for i in range(count):
        with Session(engine) as session, session.begin():
            audit.record(session, WRITER, "thing.updated", "thing", f"{prefix}-{i}", after={"n": i})
    audit.seal_in_own_transaction(sessionmaker(engine))


def portal(database: TestDatabase, anchors: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_portal(database, *args, AUDIT_ANCHOR_DIR=str(anchors))


def superuser(database: TestDatabase, *statements: str, params: Any = None) -> None:
    """As the superuser with the append-only guards off: what an intruder with full access does."""
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement, params)  # type: ignore[arg-type]


def test_anchors_are_written_per_database_and_kept(
    fresh_db: TestDatabase, engine: Engine, tmp_path: Path
) -> None:
    write_rows(engine, 3)
    first = portal(fresh_db, tmp_path, "audit", "anchor")
    assert first.returncode == 0, first.stdout + first.stderr
    write_rows(engine, 2, prefix="later")
    assert portal(fresh_db, tmp_path, "audit", "anchor").returncode == 0

    (folder,) = tmp_path.iterdir()
    assert folder.name == fresh_db.name
    anchors = read_anchors(folder)
    assert [a.seq for a in anchors] == [3, 5]
    with Session(engine) as session:
        hashes = {seq: h for seq, h in session.execute(select(AuditEntry.seq, AuditEntry.row_hash))}
    assert [a.row_hash for a in anchors] == [hashes[3], hashes[5]]

    verified = portal(fresh_db, tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout and "2 anchors kept" in verified.stdout


def test_deleting_the_newest_rows_is_caught_by_the_anchor(
    fresh_db: TestDatabase, engine: Engine, tmp_path: Path
) -> None:
    write_rows(engine, 5)
    assert portal(fresh_db, tmp_path, "audit", "anchor").returncode == 0
    superuser(fresh_db, "DELETE FROM audit_log WHERE seq >= 4")
    with Session(engine) as session:
        assert verify_chain(session).ok  # what is left is a valid, shorter chain

    result = portal(fresh_db, tmp_path, "audit", "verify")
    assert result.returncode == 1
    assert "row 5" in result.stdout and "newest rows were deleted" in result.stdout


def test_a_chain_rewritten_from_a_row_on_is_caught_by_the_anchor(
    fresh_db: TestDatabase, engine: Engine, tmp_path: Path
) -> None:
    write_rows(engine, 5)
    with Session(engine) as session:
        written = anchor_head(session, tmp_path)
    assert written is not None
    directory = written[1].parent

    # The intruder changes row 3 and recomputes every hash from there: the chain verifies.
    with Session(engine) as session:
        columns = [getattr(AuditEntry, name) for name in HASHED_FIELDS]
        rows = [
            dict(r._mapping) for r in session.execute(select(*columns).order_by(AuditEntry.seq))
        ]
    prev_hash = rows[2]["prev_hash"]  # row 2's hash, unchanged
    for row in rows[2:]:
        if row["seq"] == 3:
            row["after"] = {"n": 999}
        row["prev_hash"] = prev_hash
        prev_hash = chain_hash(row)
        superuser(
            fresh_db,
            "UPDATE audit_log SET after = %(after)s, prev_hash = %(prev)s, row_hash = %(hash)s"
            " WHERE seq = %(seq)s",
            params={
                "after": json.dumps(row["after"]),
                "prev": row["prev_hash"],
                "hash": prev_hash,
                "seq": row["seq"],
            },
        )
    with Session(engine) as session:
        assert verify_chain(session).ok
        problem = check_anchors(session, read_anchors(directory))
    assert problem is not None and problem.seq == 5
    assert "differs from its anchor" in problem.problem


def test_an_anchor_is_never_replaced(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = write_anchor(tmp_path, Anchor(7, "a" * 64, now))
    assert write_anchor(tmp_path, Anchor(7, "a" * 64, now)) == path  # the same again: no-op
    with pytest.raises(AnchorConflict):
        write_anchor(tmp_path, Anchor(7, "b" * 64, now))
    assert read_anchors(tmp_path) == [Anchor(7, "a" * 64, now)]


def test_the_worker_anchors_the_head(
    fresh_db: TestDatabase, engine: Engine, tmp_path: Path
) -> None:
    write_rows(engine, 2)
    with Session(engine) as session:
        audit.record(session, WRITER, "thing.updated", "thing", "unsealed", after={"n": 3})
        session.commit()
    result = portal(fresh_db, tmp_path, "worker", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    (anchor,) = read_anchors(tmp_path / fresh_db.name)
    assert anchor.seq == 3  # sealed first, then anchored
