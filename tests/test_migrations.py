"""The migrations are the schema: the models agree with them, and they round-trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine, inspect, pool, select
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.audit import service as audit
from app.audit.service import GENESIS_HASH, chain_hash
from app.db import make_engine, sqlalchemy_url
from app.migrations import alembic_config
from app.models import AuditEntry, Base
from tests.fixtures.database import TestDatabase


def _diff(url: str) -> list[object]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(diff)


def _tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_models_and_migrations_agree(empty_db: TestDatabase) -> None:
    command.upgrade(alembic_config(empty_db.owner_url), "head")
    assert _diff(empty_db.owner_url) == []


def test_downgrade_then_upgrade_round_trips(empty_db: TestDatabase) -> None:
    config = alembic_config(empty_db.owner_url)
    command.upgrade(config, "head")
    expected = {table.name for table in Base.metadata.sorted_tables}
    assert expected <= _tables(empty_db.owner_url)

    command.downgrade(config, "base")
    assert _tables(empty_db.owner_url) == {"alembic_version"}

    command.upgrade(config, "head")
    assert expected <= _tables(empty_db.owner_url)
    assert _diff(empty_db.owner_url) == []


def test_audit_rows_chained_before_0005_stay_in_the_chain(empty_db: TestDatabase) -> None:
    """0005 (rows written unsealed, chained by the sealer) keeps the chain written before it."""
    config = alembic_config(empty_db.owner_url)
    command.upgrade(config, "0004")
    prev_hash = GENESIS_HASH
    with psycopg.connect(empty_db.owner_url, autocommit=True) as conn:
        for seq in (1, 2):  # as 0001-0004 wrote them: chained at insert
            row: dict[str, Any] = {
                "seq": seq,
                "occurred_at": datetime(2026, 1, seq, tzinfo=UTC),
                "actor_subject": "admin-before",
                "actor_role": "admin",
                "action": "thing.created",
                "entity_type": "thing",
                "entity_id": str(seq),
                "before": None,
                "after": {"n": seq},
                "request_id": None,
                "client_address": None,
                "prev_hash": prev_hash,
            }
            row["row_hash"] = prev_hash = chain_hash(row)
            conn.execute(
                "INSERT INTO audit_log (seq, occurred_at, actor_subject, actor_role, action,"
                " entity_type, entity_id, after, prev_hash, row_hash) VALUES (%(seq)s,"
                " %(occurred_at)s, %(actor_subject)s, %(actor_role)s, %(action)s,"
                " %(entity_type)s, %(entity_id)s, %(after)s, %(prev_hash)s, %(row_hash)s)",
                {**row, "after": Jsonb(row["after"])},
            )
    command.upgrade(config, "head")

    engine = make_engine(empty_db.app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            audit.record(session, Actor.system("test"), "thing.created", "thing", "3")
        assert audit.seal_in_own_transaction(sessionmaker(engine)) == 1
        with Session(engine) as session:
            rows = session.execute(
                select(AuditEntry.id, AuditEntry.seq, AuditEntry.prev_hash).order_by(AuditEntry.id)
            ).all()
            result = audit.verify_chain(session)
    finally:
        engine.dispose()
    assert [(r.id, r.seq) for r in rows] == [(1, 1), (2, 2), (3, 3)]
    assert rows[2].prev_hash == prev_hash
    assert (result.ok, result.rows_checked) == (True, 3)


# Free-text cancellation reasons as orders held them before 0010.
OLD_REASONS = {
    "expired": "payment window expired",
    "staff": "cancelled by staff",
    "free": "Patient reports severe nausea on the pen",
}


def test_0010_turns_free_text_cancellation_reasons_into_codes_and_encrypted_notes(
    empty_db: TestDatabase,
) -> None:
    """Known system reasons become their codes; any other text becomes `other` with the text
    kept as an encrypted note (bound to its row), and the clear-text column is gone."""
    from app import phi
    from app.orders.service import cancellation_note_context

    config = alembic_config(empty_db.owner_url)
    command.upgrade(config, "0006")
    ids = {name: uuid.uuid4() for name in [*OLD_REASONS, "pending"]}
    with psycopg.connect(empty_db.owner_url, autocommit=True) as conn:
        patient_id = conn.execute(
            "INSERT INTO patients (id, name_encrypted, email_encrypted, phone_encrypted,"
            " date_of_birth_encrypted, email_hash) VALUES (gen_random_uuid(), 'n', 'e', 'p', 'd',"
            " 'h') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        for name, order_id in ids.items():
            conn.execute(
                "INSERT INTO orders (id, patient_id, status, expires_at, cancelled_at,"
                " cancellation_reason) VALUES (%s, %s, %s, now(), %s, %s)",
                (
                    order_id,
                    patient_id,
                    "pending" if name == "pending" else "cancelled",
                    None if name == "pending" else datetime.now(UTC),
                    OLD_REASONS.get(name),
                ),
            )

    command.upgrade(config, "head")

    with psycopg.connect(empty_db.owner_url, autocommit=True) as conn:
        rows = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT id, cancellation_code, cancellation_note_encrypted,"
                " row_to_json(orders)::text"
                " FROM orders"
            )
        }
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
            )
        }
    assert "cancellation_reason" not in columns
    assert rows[ids["expired"]][:2] == ("payment_expired", None)
    assert rows[ids["staff"]][:2] == ("other", None)
    assert rows[ids["pending"]][:2] == (None, None)
    code, note, whole_row = rows[ids["free"]]
    assert code == "other"
    assert note is not None and note.startswith("enc1:")
    assert "nausea" not in whole_row.lower()
    assert phi.decrypt(note, cancellation_note_context(ids["free"])) == OLD_REASONS["free"]

    command.downgrade(config, "0006")

    with psycopg.connect(empty_db.owner_url, autocommit=True) as conn:
        restored = dict(conn.execute("SELECT id, cancellation_reason FROM orders").fetchall())
    assert restored == {
        ids["expired"]: "payment window expired",
        ids["staff"]: "cancelled by staff",
        ids["free"]: OLD_REASONS["free"],
        ids["pending"]: None,
    }
