"""Writing audit rows takes no lock: only the sealer takes the chain's lock, and a writer never
waits for it. Rows are queued and written at commit, even at first sign-in."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.actor import Role
from app.audit import service as audit
from app.locks import AUDIT_CHAIN_LOCK
from app.models import AuditEntry
from app.users.service import resolve_signed_in_user
from tests.fixtures.database import TestDatabase


def _holds_audit_lock(session: Session) -> bool:
    held = session.scalar(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            " AND objid = :key AND granted"
        ),
        {"key": AUDIT_CHAIN_LOCK},
    )
    return bool(held)


def test_first_sign_in_queues_its_audit_row_until_commit(fresh_db: TestDatabase) -> None:
    from app.db import make_engine

    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            user = resolve_signed_in_user(
                session,
                subject="first-timer",
                email="first@clinic.example",
                email_verified=False,
                claimed_role=Role.DOCTOR,
                auto_provision=True,
            )
            # The user exists in this transaction, yet the chain is not locked: the request's
            # own work (e.g. reserving stock) can take row locks without risking a deadlock.
            assert user.role == "doctor"
            user_id = user.id
            assert not _holds_audit_lock(session)
            assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
            session.commit()
        with Session(engine) as session:
            entry = session.scalars(select(AuditEntry)).one()
            assert entry.action == "user.provisioned"
            assert entry.entity_id == str(user_id)
    finally:
        engine.dispose()


def test_writers_do_not_wait_for_a_sealer_holding_the_chain(fresh_db: TestDatabase) -> None:
    from app.db import make_engine

    engine = make_engine(fresh_db.app_url, pool_size=2)
    try:
        with Session(engine) as sealer, Session(engine) as writer:
            audit.seal(sealer)  # takes the chain's lock until this transaction ends
            assert _holds_audit_lock(sealer)
            writer.execute(text("SET lock_timeout = '1s'"))
            resolve_signed_in_user(
                writer,
                subject="while-sealing",
                email="while.sealing@clinic.example",
                email_verified=False,
                claimed_role=Role.DOCTOR,
                auto_provision=True,
            )
            writer.commit()  # would fail on lock_timeout if writing audit rows took the lock
            sealer.commit()
        with Session(engine) as session, session.begin():
            assert audit.seal(session) == 1
    finally:
        engine.dispose()


def test_a_rolled_back_sign_in_leaves_no_queued_audit_row(fresh_db: TestDatabase) -> None:
    from app.db import make_engine

    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            resolve_signed_in_user(
                session,
                subject="gone",
                email="gone@clinic.example",
                email_verified=False,
                claimed_role=Role.ADMIN,
                auto_provision=True,
            )
            session.rollback()
            session.commit()  # nothing queued may survive into the next transaction
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    finally:
        engine.dispose()
