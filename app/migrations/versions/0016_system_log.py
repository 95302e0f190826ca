"""system log: warnings and errors of the API, the worker and the pipelines

`system_log` holds log records of level WARNING and above, written by each process's
`app.system_logs.handler` after the PHI redaction of `app.logs`, and read by admins
(`GET /api/v1/system-logs`). The application role may insert, read and delete (the worker's
retention pruning), never update. The CHECK constraints hold frozen copies of
app.models.status's LogLevel and LogSource at this revision.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-01 21:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import app_role

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "system_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("logger", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exception", sa.Text(), nullable=True),
        sa.Column("process_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "level IN ('WARNING', 'ERROR', 'CRITICAL')", name=op.f("ck_system_log_level")
        ),
        sa.CheckConstraint(
            "source IN ('api', 'worker', 'pipelines', 'command')",
            name=op.f("ck_system_log_source"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_log")),
    )
    op.create_index("ix_system_log_created_at_id", "system_log", ["created_at", "id"])
    op.execute(f"GRANT SELECT, INSERT, DELETE ON system_log TO {app_role()}")


def downgrade() -> None:
    op.drop_index("ix_system_log_created_at_id", table_name="system_log")
    op.drop_table("system_log")
