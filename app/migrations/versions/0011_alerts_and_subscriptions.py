"""deduplicated alerts to staff, and staff subscriptions to them

`alerts` holds one row per occurrence of a condition (low stock of a product, a lot expiring,
a reconciliation mismatch...): opened when a sweep first sees it, cleared when a sweep no longer
does. A partial unique index keeps at most one open alert per (topic, key), so concurrent
sweeps cannot open a condition twice. The application role may read, insert and update alerts
(clearing is an update), never delete them: they are the history of what staff were told.

`alert_subscriptions`: which topics a member of staff hears about, by e-mail (their own
address) and/or SMS (the number encrypted like PHI).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import app_role, grant_app_role

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app.models.status.AlertTopic at this revision.
TOPICS = ("stock", "reconciliation", "data_quality", "pharmacy")
TOPIC_CHECK = "topic IN (" + ", ".join(f"'{topic}'" for topic in TOPICS) + ")"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=300), nullable=False),
        sa.Column(
            "details",
            sa.dialects.postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "opened_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(TOPIC_CHECK, name=op.f("ck_alerts_topic")),
        sa.CheckConstraint(
            "cleared_at IS NULL OR cleared_at >= opened_at",
            name=op.f("ck_alerts_cleared_after_open"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "uq_alerts_topic_key_open",
        "alerts",
        ["topic", "key"],
        unique=True,
        postgresql_where=sa.text("cleared_at IS NULL"),
    )
    op.create_index("ix_alerts_opened_at_id", "alerts", ["opened_at", "id"], unique=False)
    op.create_index(
        "ix_alerts_topic_opened_at_id", "alerts", ["topic", "opened_at", "id"], unique=False
    )

    op.create_table(
        "alert_subscriptions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("by_email", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("sms_to_encrypted", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(TOPIC_CHECK, name=op.f("ck_alert_subscriptions_topic")),
        sa.CheckConstraint(
            "by_email OR sms_to_encrypted IS NOT NULL",
            name=op.f("ck_alert_subscriptions_some_channel"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_alert_subscriptions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_subscriptions")),
        sa.UniqueConstraint("user_id", "topic", name=op.f("uq_alert_subscriptions_user_id_topic")),
    )
    grant_app_role(read_write=["alert_subscriptions"], append_only=[])
    # Alerts are the record of what staff were told: cleared, never deleted.
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON alerts TO {app_role()}")


def downgrade() -> None:
    op.drop_table("alert_subscriptions")
    op.drop_index("ix_alerts_topic_opened_at_id", table_name="alerts")
    op.drop_index("ix_alerts_opened_at_id", table_name="alerts")
    op.drop_index("uq_alerts_topic_key_open", table_name="alerts")
    op.drop_table("alerts")
