"""pharmacies, prescription submissions and the log of every exchange with a pharmacy

`pharmacies`: where prescriptions go and through which connector (the API key and OAuth2
client secret encrypted like PHI; at most one default pharmacy, a partial unique index).
Products gain optional RxNorm and NDC codes and a pharmacy of their own (the override of the
default); order items an optional, encrypted dosage text (sig).

`pharmacy_submissions`: an outbox per (order, pharmacy), written when the order is paid and
following the pharmacy's answers. `pharmacy_logs`: every HTTP exchange, bodies encrypted.
The application role may not delete submissions or logs: they are the record of what was sent.

The CHECK constraints hold frozen copies of app.models.status's PharmacySubmissionStatus,
PharmacyAuthKind, PharmacyOperation and PharmacyExchangeOutcome at this revision.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 17:46:16
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.migrations.privileges import app_role, grant_app_role

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pharmacies",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("auth_kind", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("auth_header", sa.String(length=100), nullable=True),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("token_url", sa.String(length=500), nullable=True),
        sa.Column("client_id", sa.String(length=200), nullable=True),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("scope", sa.String(length=200), nullable=True),
        sa.Column("cert_file", sa.String(length=500), nullable=True),
        sa.Column("key_file", sa.String(length=500), nullable=True),
        sa.Column("ca_file", sa.String(length=500), nullable=True),
        sa.Column(
            "mapping",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("timeout_seconds", sa.Double(), server_default=sa.text("10"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "auth_kind IN ('none', 'api_key', 'oauth2', 'mtls')",
            name=op.f("ck_pharmacies_auth_kind"),
        ),
        sa.CheckConstraint(
            "timeout_seconds > 0 AND timeout_seconds <= 120",
            name=op.f("ck_pharmacies_timeout_in_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pharmacies")),
        sa.UniqueConstraint("name", name=op.f("uq_pharmacies_name")),
    )
    op.create_index(
        "uq_pharmacies_is_default",
        "pharmacies",
        ["is_default"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "pharmacy_submissions",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("pharmacy_id", sa.Uuid(), nullable=True),
        sa.Column("order_item_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("dispense", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispensed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'submitted', 'accepted', 'rejected', 'dispensed',"
            " 'cancelled', 'dead_letter')",
            name=op.f("ck_pharmacy_submissions_status"),
        ),
        sa.CheckConstraint(
            "attempts >= 0", name=op.f("ck_pharmacy_submissions_attempts_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_pharmacy_submissions_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["pharmacy_id"],
            ["pharmacies.id"],
            name=op.f("fk_pharmacy_submissions_pharmacy_id_pharmacies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pharmacy_submissions")),
    )
    op.create_index(
        "ix_pharmacy_submissions_created_at_id",
        "pharmacy_submissions",
        ["created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_pharmacy_submissions_order_id"), "pharmacy_submissions", ["order_id"], unique=False
    )
    op.create_index(
        op.f("ix_pharmacy_submissions_pharmacy_id"),
        "pharmacy_submissions",
        ["pharmacy_id"],
        unique=False,
    )
    op.create_index(
        "ix_pharmacy_submissions_status_created_at_id",
        "pharmacy_submissions",
        ["status", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_pharmacy_submissions_status_next_attempt_at",
        "pharmacy_submissions",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "pharmacy_logs",
        sa.Column("pharmacy_id", sa.Uuid(), nullable=False),
        sa.Column("submission_id", sa.Uuid(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("request_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("request_body_encrypted", sa.Text(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("response_body_encrypted", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "operation IN ('submit', 'status', 'cancel', 'healthcheck')",
            name=op.f("ck_pharmacy_logs_operation"),
        ),
        sa.CheckConstraint(
            "outcome IN ('ok', 'transient_error', 'permanent_error', 'not_cancellable')",
            name=op.f("ck_pharmacy_logs_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["pharmacy_id"], ["pharmacies.id"], name=op.f("fk_pharmacy_logs_pharmacy_id_pharmacies")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["pharmacy_submissions.id"],
            name=op.f("fk_pharmacy_logs_submission_id_pharmacy_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pharmacy_logs")),
    )
    op.create_index(
        op.f("ix_pharmacy_logs_pharmacy_id"), "pharmacy_logs", ["pharmacy_id"], unique=False
    )
    op.create_index(
        "ix_pharmacy_logs_submission_id_at", "pharmacy_logs", ["submission_id", "at"], unique=False
    )
    op.add_column("order_items", sa.Column("dosage_text_encrypted", sa.Text(), nullable=True))
    op.add_column("products", sa.Column("rxnorm_code", sa.String(length=8), nullable=True))
    op.add_column("products", sa.Column("ndc_code", sa.String(length=13), nullable=True))
    op.add_column("products", sa.Column("pharmacy_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_products_pharmacy_id_pharmacies"),
        "products",
        "pharmacies",
        ["pharmacy_id"],
        ["id"],
        ondelete="SET NULL",
    )
    grant_app_role(read_write=["pharmacies"], append_only=[])
    # Submissions and logs are the record of what was sent: updated (status, key rotation),
    # never deleted by the application.
    for table in ("pharmacy_submissions", "pharmacy_logs"):
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app_role()}")


def downgrade() -> None:
    op.drop_constraint(op.f("fk_products_pharmacy_id_pharmacies"), "products", type_="foreignkey")
    op.drop_column("products", "pharmacy_id")
    op.drop_column("products", "ndc_code")
    op.drop_column("products", "rxnorm_code")
    op.drop_column("order_items", "dosage_text_encrypted")
    op.drop_index("ix_pharmacy_logs_submission_id_at", table_name="pharmacy_logs")
    op.drop_index(op.f("ix_pharmacy_logs_pharmacy_id"), table_name="pharmacy_logs")
    op.drop_table("pharmacy_logs")
    op.drop_index(
        "ix_pharmacy_submissions_status_next_attempt_at", table_name="pharmacy_submissions"
    )
    op.drop_index("ix_pharmacy_submissions_status_created_at_id", table_name="pharmacy_submissions")
    op.drop_index(op.f("ix_pharmacy_submissions_pharmacy_id"), table_name="pharmacy_submissions")
    op.drop_index(op.f("ix_pharmacy_submissions_order_id"), table_name="pharmacy_submissions")
    op.drop_index("ix_pharmacy_submissions_created_at_id", table_name="pharmacy_submissions")
    op.drop_table("pharmacy_submissions")
    op.drop_index(
        "uq_pharmacies_is_default", table_name="pharmacies", postgresql_where=sa.text("is_default")
    )
    op.drop_table("pharmacies")
