"""The audit log: append-only in the database, hash-chained, gap-free under concurrency.

Rows are written unsealed in their business transaction; the sealer chains them. `verify()`
below seals first, as `portal audit verify` and `GET /audit/verification` do.

Tests that must commit (tampering, threads, the CLI) run on a database of their own
(`fresh_db`), with the application's restricted role for everything the app itself would do and
the superuser only for the tampering.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.errors import InsufficientPrivilege
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor, Role
from app.audit import service as audit
from app.audit.service import GENESIS_HASH, compute_hash, verify_chain
from app.db import get_session, make_engine
from app.main import create_app
from app.models import AuditEntry
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import Auth, JwtIssuer

ADMIN = Actor(
    subject="admin-audit",
    role=Role.ADMIN,
    request_id="req-audit",
    client_address="10.0.0.7",
)


@pytest.fixture
def fresh_engine(fresh_db: TestDatabase) -> Iterator[Engine]:
    engine = make_engine(fresh_db.app_url, pool_size=8)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_client(fresh_engine: Engine) -> Iterator[TestClient]:
    """The API on `fresh_db`, committing like production (one session per request)."""
    application = create_app()
    factory = sessionmaker(fresh_engine, expire_on_commit=False)

    def session_override() -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    application.dependency_overrides[get_session] = session_override
    with TestClient(application, raise_server_exceptions=False) as client:
        yield client


def write_rows(engine: Engine, count: int, *, actor: Actor = ADMIN, prefix: str = "row") -> None:
    """`count` audit rows, each in its own committed transaction."""
    for i in range(count):
        with Session(engine) as session, session.begin():
            audit.record(
                session,
                actor,
                "thing.updated",
                "thing",
                f"{prefix}-{i}",
                before={"n": i},
                after={"n": i + 1, "when": "now"},
            )


def seal(engine: Engine) -> int:
    return audit.seal_in_own_transaction(sessionmaker(engine))


def verify(engine: Engine) -> audit.VerificationResult:
    seal(engine)
    with Session(engine) as session:
        return verify_chain(session)


def tamper(database: TestDatabase, *statements: str) -> None:
    """As the superuser, with triggers disabled for the session (the append-only guard too)."""
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def chain(fresh_db: TestDatabase, fresh_engine: Engine) -> TestDatabase:
    """Ten committed audit rows on `fresh_db`, chain intact."""
    write_rows(fresh_engine, 10)
    result = verify(fresh_engine)
    assert result.ok, result.first_break
    assert result.rows_checked == 10
    return fresh_db


# -- (a) append-only in the database ----------------------------------------------------------


def _refused(conn: psycopg.Connection[Any], statement: str) -> str:
    with pytest.raises(InsufficientPrivilege) as excinfo:
        conn.execute(statement)  # type: ignore[arg-type]
    return str(excinfo.value)


def test_app_role_can_only_insert_select_and_seal_the_audit_log(
    fresh_db: TestDatabase, fresh_engine: Engine
) -> None:
    write_rows(fresh_engine, 2)
    seal(fresh_engine)
    write_rows(fresh_engine, 1, prefix="unsealed")
    with psycopg.connect(fresh_db.app_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("portal_app",)
        # The rows' ids, not 1 and 3: the template's id sequence moves with the rolled-back
        # writes of earlier tests, and an UPDATE that matches no row is refused by nothing.
        sealed, _, unsealed = (
            row[0] for row in conn.execute("SELECT id FROM audit_log ORDER BY seq NULLS LAST, id")
        )
        for statement in (
            f"UPDATE audit_log SET action = 'forged' WHERE id = {sealed}",
            # A sealed row cannot be sealed again (re-chained).
            f"UPDATE audit_log SET row_hash = '{'f' * 64}' WHERE id = {sealed}",
            # An unsealed row cannot be changed while it is sealed, nor be born sealed.
            f"UPDATE audit_log SET action = 'forged', seq = 3, prev_hash = '{'a' * 64}',"
            f" row_hash = '{'b' * 64}' WHERE id = {unsealed}",
            "INSERT INTO audit_log (seq, occurred_at, actor_subject, actor_role, action,"
            f" entity_type, entity_id, prev_hash, row_hash) VALUES (3, now(), 'x', 'admin',"
            f" 'probe', 'probe', 'p', '{'a' * 64}', '{'b' * 64}')",
            f"DELETE FROM audit_log WHERE id = {sealed}",
            f"DELETE FROM audit_log WHERE id = {unsealed}",
            "TRUNCATE audit_log",
            # Nor can it switch the guards off.
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            "SET session_replication_role = replica",
            "DROP TABLE audit_log",
        ):
            _refused(conn, statement)
        assert conn.execute("SELECT count(*), count(seq) FROM audit_log").fetchone() == (3, 2)

    with psycopg.connect(fresh_db.app_url) as conn:  # a transaction, rolled back at the end
        conn.execute(
            "INSERT INTO audit_log (occurred_at, actor_subject, actor_role, action,"
            " entity_type, entity_id) VALUES (now(), 'x', 'admin', 'probe', 'probe', 'p')"
        )
        assert conn.execute("SELECT seq FROM audit_log WHERE action = 'probe'").fetchone() == (
            None,
        )
        conn.rollback()
    assert verify(fresh_engine).rows_checked == 3


def test_app_role_cannot_change_the_stock_ledger(fresh_db: TestDatabase) -> None:
    with psycopg.connect(fresh_db.app_url, autocommit=True) as conn:
        for statement in (
            "UPDATE stock_movements SET note = 'forged'",
            "DELETE FROM stock_movements",
            "TRUNCATE stock_movements",
        ):
            _refused(conn, statement)
        conn.execute("SELECT count(*) FROM stock_movements")  # reading is allowed


def _seed_stock_movement(database: TestDatabase) -> None:
    product, lot = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO products (id, sku, name, price_cents) VALUES (%s, 'AO-1', 'Gauze', 100)",
            (product,),
        )
        conn.execute(
            "INSERT INTO lots (id, product_id, lot_number) VALUES (%s, %s, 'L1')", (lot, product)
        )
        conn.execute(
            "INSERT INTO stock_movements (id, lot_id, delta_on_hand, delta_reserved, reason,"
            " actor_subject) VALUES (%s, %s, 5, 0, 'receipt', 'admin')",
            (uuid.uuid4(), lot),
        )


def test_even_the_superuser_cannot_update_or_delete(
    fresh_db: TestDatabase, fresh_engine: Engine
) -> None:
    write_rows(fresh_engine, 2)
    _seed_stock_movement(fresh_db)
    with psycopg.connect(fresh_db.owner_url, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        first, second = (row[0] for row in conn.execute("SELECT id FROM audit_log ORDER BY id"))
        for statement in (
            f"UPDATE audit_log SET action = 'forged' WHERE id = {first}",
            f"DELETE FROM audit_log WHERE id = {second}",
            "TRUNCATE audit_log",
            "UPDATE stock_movements SET note = 'forged'",
            "DELETE FROM stock_movements",
            "TRUNCATE stock_movements",
        ):
            assert "append-only" in _refused(conn, statement)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM stock_movements").fetchone() == (1,)
    assert verify(fresh_engine).ok


# -- (b) tamper detection ---------------------------------------------------------------------


def test_intact_chain_verifies(chain: TestDatabase, fresh_engine: Engine) -> None:
    with Session(fresh_engine) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        assert [r.seq for r in rows] == list(range(1, 11))
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
        assert rows[0].actor_subject == "admin-audit"
        assert rows[0].request_id == "req-audit"
        assert rows[0].client_address == "10.0.0.7"
        head = rows[-1].row_hash
    result = verify(fresh_engine)
    assert (result.ok, result.rows_checked, result.head_hash) == (True, 10, head)


def test_a_changed_row_is_named(chain: TestDatabase, fresh_engine: Engine) -> None:
    tamper(chain, """UPDATE audit_log SET after = '{"n": 999}' WHERE seq = 4""")
    result = verify(fresh_engine)
    assert not result.ok
    assert result.first_break is not None
    assert result.first_break.seq == 4
    assert "changed" in result.first_break.problem
    assert result.rows_checked == 3


@pytest.mark.parametrize(
    "assignment",
    [
        "actor_subject = 'someone-else'",
        "occurred_at = occurred_at + interval '1 second'",
        "action = 'thing.deleted'",
        "client_address = NULL",
    ],
)
def test_any_changed_field_is_detected(
    chain: TestDatabase, fresh_engine: Engine, assignment: str
) -> None:
    tamper(chain, f"UPDATE audit_log SET {assignment} WHERE seq = 7")
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 7


def test_a_rehashed_change_is_caught_at_the_next_row(
    chain: TestDatabase, fresh_engine: Engine
) -> None:
    """A forger who also recomputes the changed row's hash breaks the link to the next row."""
    with Session(fresh_engine) as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.seq == 4)).one()
        session.expunge(entry)
    entry.after = {"n": 999}
    forged_hash = compute_hash(entry)
    tamper(
        chain,
        f"""UPDATE audit_log SET after = '{{"n": 999}}', row_hash = '{forged_hash}'
            WHERE seq = 4""",
    )
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 5
    assert "does not follow" in result.first_break.problem


def test_a_deleted_row_is_named(chain: TestDatabase, fresh_engine: Engine) -> None:
    tamper(chain, "DELETE FROM audit_log WHERE seq = 6")
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 6
    assert "missing" in result.first_break.problem


def test_a_deleted_first_row_is_named(chain: TestDatabase, fresh_engine: Engine) -> None:
    tamper(chain, "DELETE FROM audit_log WHERE seq = 1")
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 1


def test_swapped_rows_are_detected_at_the_first_one(
    chain: TestDatabase, fresh_engine: Engine
) -> None:
    # Rows 3 and 4 trade places: each keeps its content and hashes, only the order changes.
    tamper(
        chain,
        "UPDATE audit_log SET seq = -3 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = -3",
    )
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 3
    assert result.rows_checked == 2


def test_swapped_content_is_detected_at_the_first_row(
    chain: TestDatabase, fresh_engine: Engine
) -> None:
    # The content (everything but seq and the hashes) of rows 8 and 9 is exchanged.
    columns = ["occurred_at", "actor_subject", "action", "entity_id", "before", "after"]
    assignments = ", ".join(f"{c} = other.{c}" for c in columns)
    tamper(
        chain,
        "CREATE TEMP TABLE original AS SELECT * FROM audit_log WHERE seq IN (8, 9)",
        f"UPDATE audit_log SET {assignments} FROM original AS other"
        " WHERE (audit_log.seq, other.seq) IN ((8, 9), (9, 8))",
    )
    result = verify(fresh_engine)
    assert result.first_break is not None
    assert result.first_break.seq == 8


def test_the_api_reports_tampering(
    fresh_client: TestClient, auth: Auth, fresh_db: TestDatabase
) -> None:
    """Rows written through the API; `GET /audit/verification` names the broken row."""
    admin = auth("admin", sub="admin-api-chain")
    for i in range(9):
        response = fresh_client.post(
            "/api/v1/users",
            json={"email": f"chain-{i}@clinic.example.org", "role": "doctor"},
            headers={**admin, "X-Request-ID": f"req-{i}"},
        )
        assert response.status_code == 201, response.text
    status = fresh_client.get("/api/v1/audit/verification", headers=admin).json()
    # The admin's first request provisioned them: one row, then nine invitations.
    assert status == {
        "ok": True,
        "rows_checked": 10,
        "head_hash": status["head_hash"],
        "first_bad_seq": None,
        "problem": None,
        "unsealed_rows": 0,
        "sealing_overdue": False,
    }
    log = fresh_client.get("/api/v1/audit", params={"limit": 3}, headers=admin).json()
    assert [row["seq"] for row in log["items"]] == [10, 9, 8]
    assert log["items"][0]["action"] == "user.invited"
    assert log["items"][0]["actor_subject"] == "admin-api-chain"
    assert log["items"][0]["request_id"] == "req-8"
    assert log["items"][0]["row_hash"] == status["head_hash"]

    tamper(fresh_db, """UPDATE audit_log SET after = after || '{"role": "admin"}' WHERE seq = 5""")
    status = fresh_client.get("/api/v1/audit/verification", headers=admin).json()
    assert status["ok"] is False
    assert status["first_bad_seq"] == 5
    assert "changed" in status["problem"]


# -- API writes are audited -------------------------------------------------------------------


def _audit_rows(db: Session, entity_id: str) -> list[AuditEntry]:
    return list(
        db.scalars(
            select(AuditEntry).where(AuditEntry.entity_id == entity_id).order_by(AuditEntry.id)
        )
    )


def test_user_changes_are_audited_with_who_and_what(
    client: TestClient, db: Session, admin: dict[str, str]
) -> None:
    invited = client.post(
        "/api/v1/users",
        json={"email": "audited@clinic.example.org", "role": "doctor"},
        headers={**admin, "X-Request-ID": "req-invite"},
    ).json()
    client.patch(
        f"/api/v1/users/{invited['id']}",
        json={"role": "admin"},
        headers={**admin, "X-Request-ID": "req-promote"},
    )
    invite_row, update_row = _audit_rows(db, invited["id"])
    assert (invite_row.action, invite_row.actor_subject, invite_row.actor_role) == (
        "user.invited",
        "admin-main",
        "admin",
    )
    assert invite_row.request_id == "req-invite"
    assert invite_row.client_address == "testclient"
    assert invite_row.before is None
    assert invite_row.after is not None
    assert invite_row.after["email"] == "audited@clinic.example.org"
    assert update_row.action == "user.updated"
    assert update_row.request_id == "req-promote"
    assert update_row.before is not None and update_row.before["role"] == "doctor"
    assert update_row.after is not None and update_row.after["role"] == "admin"
    assert verify_chain(db).ok


def test_sign_ins_that_create_or_link_accounts_are_audited(
    client: TestClient, db: Session, admin: dict[str, str], auth: Auth, jwt_issuer: JwtIssuer
) -> None:
    new = client.get("/api/v1/users/me", headers=auth("doctor", sub="doc-new-audit")).json()
    (provisioned,) = _audit_rows(db, new["id"])
    assert provisioned.action == "user.provisioned"
    assert provisioned.actor_subject == "system:oidc-sign-in"
    assert provisioned.after is not None and provisioned.after["oidc_subject"] == "doc-new-audit"

    invited = client.post(
        "/api/v1/users",
        json={"email": "link.me@clinic.example.org", "role": "doctor"},
        headers=admin,
    ).json()
    # Claiming an invitation needs an e-mail the issuer says is verified.
    token = jwt_issuer.token(
        "okta|link-me", role="doctor", email="link.me@clinic.example.org", email_verified=True
    )
    client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert [r.action for r in _audit_rows(db, invited["id"])] == ["user.invited", "user.linked"]


def test_failed_changes_write_no_audit_row(
    client: TestClient, db: Session, admin: dict[str, str]
) -> None:
    body = {"email": "once@clinic.example.org", "role": "doctor"}
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 201
    count = db.scalar(select(func.count()).select_from(AuditEntry))
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    assert db.scalar(select(func.count()).select_from(AuditEntry)) == count


def test_reads_of_the_log_are_admin_only(
    client: TestClient, doctor: dict[str, str], admin: dict[str, str]
) -> None:
    assert client.get("/api/v1/audit", headers=doctor).status_code == 403
    assert client.get("/api/v1/audit/verification", headers=doctor).status_code == 403
    assert client.get("/api/v1/audit", headers=admin).status_code == 200


# -- (c) concurrency --------------------------------------------------------------------------


def test_concurrent_writers_and_sealers_do_not_fork_the_chain(fresh_engine: Engine) -> None:
    """Eight writers commit rows while two sealers run in a loop: one gap-free chain."""
    threads_count, per_thread = 8, 25
    barrier = threading.Barrier(threads_count + 2)
    writing_done = threading.Event()
    errors: list[BaseException] = []
    sealed_by: list[int] = []

    def writer(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            actor = Actor(subject=f"writer-{n}", role=Role.SYSTEM)
            write_rows(fresh_engine, per_thread, actor=actor, prefix=f"t{n}")
        except BaseException as exc:
            errors.append(exc)

    def sealer() -> None:
        try:
            barrier.wait(timeout=30)
            while not writing_done.is_set():
                sealed_by.append(seal(fresh_engine))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    sealers = [threading.Thread(target=sealer) for _ in range(2)]
    for thread in writers + sealers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    writing_done.set()
    for thread in sealers:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in writers + sealers)
    sealed_by.append(seal(fresh_engine))
    # Sealing went on while rows were written (otherwise this test proves little).
    assert sum(1 for n in sealed_by if n) > 2

    total = threads_count * per_thread
    with Session(fresh_engine) as session:
        seqs = list(session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))
        entities = set(session.scalars(select(AuditEntry.entity_id)))
        writer_count = session.scalar(select(func.count(func.distinct(AuditEntry.actor_subject))))
        # The writers really interleaved (otherwise this test proves little).
        switches = session.scalar(
            text(
                "SELECT count(*) FROM (SELECT actor_subject,"
                " lag(actor_subject) OVER (ORDER BY seq) AS prev FROM audit_log) s"
                " WHERE prev IS DISTINCT FROM actor_subject"
            )
        )
    assert seqs == list(range(1, total + 1))
    assert sum(sealed_by) == total
    assert len(entities) == total
    assert writer_count == threads_count
    assert switches is not None and switches > threads_count
    result = verify(fresh_engine)
    assert result.ok, result.first_break
    assert result.rows_checked == total


def test_rows_are_written_unsealed_and_sealed_in_insertion_order(
    fresh_engine: Engine,
) -> None:
    write_rows(fresh_engine, 3, prefix="first")
    with Session(fresh_engine) as session:
        assert session.scalar(select(func.count(AuditEntry.seq))) == 0
    assert seal(fresh_engine) == 3
    assert seal(fresh_engine) == 0
    write_rows(fresh_engine, 2, prefix="later")
    assert seal(fresh_engine) == 2
    with Session(fresh_engine) as session:
        rows = session.execute(
            select(AuditEntry.id, AuditEntry.seq, AuditEntry.entity_id).order_by(AuditEntry.id)
        ).all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [r.entity_id for r in rows] == ["first-0", "first-1", "first-2", "later-0", "later-1"]
    assert verify(fresh_engine).rows_checked == 5


def test_a_second_sealer_steps_aside(fresh_engine: Engine) -> None:
    write_rows(fresh_engine, 2)
    with Session(fresh_engine) as holder, holder.begin():
        assert audit.seal(holder) == 2  # holds the sealer's lock until this block ends
        assert seal(fresh_engine) == 0
    with Session(fresh_engine) as session:
        assert session.scalar(select(func.count(AuditEntry.seq))) == 2


def test_verification_reports_rows_the_sealer_has_not_reached(
    fresh_engine: Engine, fresh_db: TestDatabase
) -> None:
    write_rows(fresh_engine, 2)
    with psycopg.connect(fresh_db.app_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_log (occurred_at, actor_subject, actor_role, action,"
            " entity_type, entity_id) VALUES (now() - interval '1 hour', 'x', 'admin',"
            " 'thing.updated', 'thing', 'old')"
        )
    with Session(fresh_engine) as session:
        pending = verify_chain(session)
    assert (pending.ok, pending.rows_checked, pending.unsealed_rows) == (True, 0, 3)
    assert pending.sealing_overdue
    result = verify(fresh_engine)
    assert (result.rows_checked, result.unsealed_rows, result.sealing_overdue) == (3, 0, False)


# -- (d) `portal audit verify` ----------------------------------------------------------------


def run_verify_cli(database: TestDatabase) -> subprocess.CompletedProcess[str]:
    return run_portal(database, "audit", "verify")


def test_the_worker_seals_the_log(fresh_db: TestDatabase, fresh_engine: Engine) -> None:
    write_rows(fresh_engine, 4)
    result = run_portal(fresh_db, "worker", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    with Session(fresh_engine) as session:
        assert session.scalar(select(func.count(AuditEntry.seq))) == 4
        assert verify_chain(session).rows_checked == 4


def test_cli_verify_seals_pending_rows_first(fresh_db: TestDatabase, fresh_engine: Engine) -> None:
    write_rows(fresh_engine, 3)
    result = run_verify_cli(fresh_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 pending rows sealed" in result.stdout
    assert "intact" in result.stdout and "3 rows" in result.stdout


def test_cli_verify(chain: TestDatabase) -> None:
    intact = run_verify_cli(chain)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout
    assert "10 rows" in intact.stdout

    tamper(chain, "DELETE FROM audit_log WHERE seq = 7")
    broken = run_verify_cli(chain)
    assert broken.returncode != 0
    assert "row 7" in broken.stdout, broken.stdout + broken.stderr
    assert "missing" in broken.stdout
