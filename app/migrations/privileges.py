"""Database-side guarantees the migrations install: the restricted application role and the
append-only tables (audit log, stock ledger) that no one may UPDATE, DELETE or TRUNCATE."""

from __future__ import annotations

from collections.abc import Iterable

from alembic import op

from app.config import get_settings

APPEND_ONLY_TABLES = ["audit_log", "stock_movements"]


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe identifier {name!r}")
    return f'"{name}"'


def app_role() -> str:
    return _ident(get_settings().database_app_role)


def grant_app_role(*, read_write: Iterable[str], append_only: Iterable[str]) -> None:
    """Create the application role if missing and grant it exactly what it needs."""
    role = app_role()
    op.execute(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {role.replace('"', "'")}) THEN
            CREATE ROLE {role} LOGIN;
          END IF;
        END $$
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    for table in read_write:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {_ident(table)} TO {role}")
    for table in append_only:
        op.execute(f"REVOKE ALL ON {_ident(table)} FROM {role}")
        op.execute(f"GRANT SELECT, INSERT ON {_ident(table)} TO {role}")


def install_append_only_guards(tables: Iterable[str]) -> None:
    """Refuse UPDATE/DELETE/TRUNCATE for every role, the owner included.

    A superuser can still bypass triggers (`session_replication_role = replica`); the audit
    chain's verifier is what catches that.
    """
    op.execute(
        """
        CREATE OR REPLACE FUNCTION portal_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in tables:
        t = _ident(table)
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {t}"
            " FOR EACH ROW EXECUTE FUNCTION portal_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {t}"
            " FOR EACH STATEMENT EXECUTE FUNCTION portal_refuse_change()"
        )


def drop_append_only_guards(tables: Iterable[str]) -> None:
    for table in tables:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {_ident(table)}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {_ident(table)}")
    op.execute("DROP FUNCTION IF EXISTS portal_refuse_change()")
