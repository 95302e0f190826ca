"""patient access links: the e-mailed, time-limited "my orders" links

Only the SHA-256 of a link's token is stored, with keyed hashes of the e-mail and of (e-mail,
date of birth) that find the patients it opens; no PHI in clear.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import grant_app_role

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_access_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_access_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_patient_access_links_token_hash")),
    )
    op.create_index(
        op.f("ix_patient_access_links_email_hash"),
        "patient_access_links",
        ["email_hash"],
        unique=False,
    )
    grant_app_role(read_write=["patient_access_links"], append_only=[])


def downgrade() -> None:
    op.drop_index(op.f("ix_patient_access_links_email_hash"), table_name="patient_access_links")
    op.drop_table("patient_access_links")
