"""payment reconciliation: runs and the exceptions they find

`reconciliation_runs` records each comparison of the portal's payments with Stripe's for a
period; `reconciliation_exceptions` holds each disagreement once per (kind, Stripe object),
with when it was first and last seen and whether it was repaired or resolved.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.migrations.privileges import grant_app_role

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.models.status.ReconciliationKind, frozen here as this migration created it.
KINDS = (
    "missed_payment",
    "missed_refund",
    "disputed",
    "not_paid_at_stripe",
    "amount_differs",
    "currency_differs",
    "refunded_here_only",
    "unknown_intent",
)


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_subject", sa.String(length=255), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("intents_examined", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("exceptions_seen", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("exceptions_new", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("repaired", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "counts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("disputes_listed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint(
            "period_start < period_end", name=op.f("ck_reconciliation_runs_period_ordered")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
    )
    op.create_table(
        "reconciliation_exceptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("stripe_object_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("expected_cents", sa.Integer(), nullable=True),
        sa.Column("actual_cents", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_run_id", sa.Uuid(), nullable=False),
        sa.Column("last_run_id", sa.Uuid(), nullable=False),
        sa.Column("repaired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("repair_event_id", sa.String(length=255), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.Column("resolution_note_encrypted", sa.Text(), nullable=True),
        sa.CheckConstraint(
            sa.column("kind").in_(KINDS), name=op.f("ck_reconciliation_exceptions_kind")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_reconciliation_exceptions_payment_id_payments"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_reconciliation_exceptions_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["first_run_id"],
            ["reconciliation_runs.id"],
            name=op.f("fk_reconciliation_exceptions_first_run_id_reconciliation_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["last_run_id"],
            ["reconciliation_runs.id"],
            name=op.f("fk_reconciliation_exceptions_last_run_id_reconciliation_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_exceptions")),
        sa.UniqueConstraint(
            "kind",
            "stripe_object_id",
            name=op.f("uq_reconciliation_exceptions_kind_stripe_object_id"),
        ),
    )
    op.create_index(
        "ix_reconciliation_exceptions_first_seen_at_id",
        "reconciliation_exceptions",
        ["first_seen_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_reconciliation_exceptions_payment_intent_id"),
        "reconciliation_exceptions",
        ["payment_intent_id"],
        unique=False,
    )
    grant_app_role(read_write=["reconciliation_runs", "reconciliation_exceptions"], append_only=[])


def downgrade() -> None:
    op.drop_index(
        op.f("ix_reconciliation_exceptions_payment_intent_id"),
        table_name="reconciliation_exceptions",
    )
    op.drop_index(
        "ix_reconciliation_exceptions_first_seen_at_id", table_name="reconciliation_exceptions"
    )
    op.drop_table("reconciliation_exceptions")
    op.drop_table("reconciliation_runs")
