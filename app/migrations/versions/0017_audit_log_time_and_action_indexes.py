"""audit log indexes by time and by action

The audit log is filtered by time and by action (the admins' log and the access review of PHI
reads over a period); without these indexes each such question read the whole log. Built
CONCURRENTLY, outside the migration's transaction: every request writes audit rows, and a plain
CREATE INDEX would hold them all back while it reads a large log.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_audit_log_occurred_at": ["occurred_at"],
    "ix_audit_log_action_occurred_at": ["action", "occurred_at"],
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in INDEXES.items():
            # An interrupted concurrent build leaves an invalid index behind: start afresh.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.create_index(name, "audit_log", columns, postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(
                name, table_name="audit_log", postgresql_concurrently=True, if_exists=True
            )
