"""read-only analyst role over the `analytics` schema

The dbt marts are built in the schema `analytics` (staging and intermediate models in schemas
of their own). Analysts connect as DATABASE_ANALYST_ROLE (default `portal_analyst`): it may use
`analytics` and read its tables and views, those there now and those created later by the role
running these migrations (dbt also grants on each mart it builds, whoever runs it), and nothing
else: no table of `public` (patients, orders, the audit log), no staging schema. Its sessions are
read-only by default.

The role is created if missing (roles belong to the server, not to one database) and never
dropped: the downgrade takes its rights in this database away and drops `analytics`, whose
tables are derived from the portal's and rebuilt by `dbt build`.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 17:10:00
"""

from collections.abc import Sequence

from alembic import op

from app.config import get_settings

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "analytics"


def _role() -> str:
    name = get_settings().database_analyst_role
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe role name {name!r}")
    return name


def upgrade() -> None:
    role = _role()
    op.execute(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
          END IF;
        END $$
        """
    )
    # Read-only sessions by default (its grants already allow nothing else). A role created
    # beforehand by someone else may not be ours to alter: then the grants alone stand.
    op.execute(
        f"""
        DO $$ BEGIN
          ALTER ROLE "{role}" SET default_transaction_read_only = on;
        EXCEPTION WHEN insufficient_privilege THEN
          RAISE NOTICE 'role % left as it is (not ours to alter)', '{role}';
        END $$
        """
    )
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    # Nothing of `public` (PostgreSQL 15+ grants PUBLIC only USAGE there; older servers also
    # CREATE, which nobody needs).
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"')
    op.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO "{role}"')


def downgrade() -> None:
    role = _role()
    # A checked identifier, no data.
    revoke = f'ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} REVOKE SELECT ON TABLES FROM "{role}"'  # noqa: S608
    op.execute(revoke)
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
