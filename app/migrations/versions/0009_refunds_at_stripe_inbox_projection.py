"""refunds made at Stripe; the webhook inbox keeps an allow-listed projection

`payment_refunds` records each Stripe refund once (its events arrive in any order, repeated), and
`payments.refunded_after_fulfilment` flags a payment refunded in full after its order shipped.

`stripe_events` stored each event whole, and Stripe objects can carry a payer's name, e-mail,
phone and address. The stored payloads are rewritten to the fields the portal keeps (the same
rules as `app.integrations.stripe.inbox`, frozen here in SQL); what is dropped cannot be restored.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.privileges import grant_app_role

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_FIELDS = ("id", "object", "type", "created", "api_version", "livemode")
OBJECT_FIELDS = (
    "id",
    "object",
    "status",
    "amount",
    "amount_received",
    "amount_refunded",
    "currency",
    "created",
    "refunded",
    "disputed",
    "captured",
    "paid",
    "reason",
    "failure_reason",
    "cancellation_reason",
)
REFERENCES = ("payment_intent", "charge", "latest_charge", "payment_method", "customer")
REFUND_FIELDS = (
    "id",
    "object",
    "amount",
    "currency",
    "status",
    "created",
    "reason",
    "failure_reason",
)
ERROR_FIELDS = ("code", "decline_code", "type")
METADATA_FIELDS = ("order_id",)


def _plain(src: str, key: str) -> str:
    value = f"({src} -> '{key}')"
    return f"CASE WHEN jsonb_typeof({value}) IN ('string', 'number', 'boolean') THEN {value} END"


def _pairs(src: str, fields: Sequence[str]) -> list[str]:
    return [f"'{f}', {_plain(src, f)}" for f in fields]


def _reference(src: str, key: str) -> str:
    value = f"({src} -> '{key}')"
    return (
        f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {_plain(value, 'id')}"
        f" ELSE {_plain(src, key)} END"
    )


def _sub_object(src: str, key: str, fields: Sequence[str]) -> str:
    value = f"({src} -> '{key}')"
    picked = ", ".join(_pairs(value, fields))
    return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN jsonb_build_object({picked}) END"


def _refund(src: str) -> str:
    pairs = _pairs(src, REFUND_FIELDS)
    pairs += [f"'{name}', {_reference(src, name)}" for name in ("payment_intent", "charge")]
    pairs.append(f"'metadata', {_sub_object(src, 'metadata', METADATA_FIELDS)}")
    return f"jsonb_build_object({', '.join(pairs)})"


def _elements(array: str, element: str, var: str, where: str = "TRUE") -> str:
    """The JSON array of `element` (SQL over `var`) for each element of `array`, in order."""
    rows = f"jsonb_array_elements({array}) WITH ORDINALITY AS e ({var}, n)"
    aggregate = f"jsonb_agg({element} ORDER BY n)"
    return f"COALESCE((SELECT {aggregate} FROM {rows} WHERE {where}), '[]'::jsonb)"  # noqa: S608


def _object(src: str) -> str:
    types = f"({src} -> 'payment_method_types')"
    refunds = f"({src} -> 'refunds' -> 'data')"
    strings = _elements(types, "t", "t", "jsonb_typeof(t) = 'string'")
    pairs = _pairs(src, OBJECT_FIELDS)
    pairs += [f"'{name}', {_reference(src, name)}" for name in REFERENCES]
    pairs += [
        f"'payment_method_types', CASE WHEN jsonb_typeof({types}) = 'array' THEN {strings} END",
        f"'metadata', {_sub_object(src, 'metadata', METADATA_FIELDS)}",
        f"'last_payment_error', {_sub_object(src, 'last_payment_error', ERROR_FIELDS)}",
        f"'refunds', CASE WHEN jsonb_typeof({refunds}) = 'array'"
        f" THEN jsonb_build_object('data', {_elements(refunds, _refund('r'), 'r')}) END",
    ]
    return f"jsonb_build_object({', '.join(pairs)})"


def projection(src: str) -> str:
    """SQL for the stored part of the event held in the jsonb expression `src`."""
    pairs = _pairs(src, EVENT_FIELDS)
    obj = f"({src} -> 'data' -> 'object')"
    pairs.append(f"'data', jsonb_build_object('object', {_object(obj)})")
    return f"jsonb_strip_nulls(jsonb_build_object({', '.join(pairs)}))"


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column(
            "refunded_after_fulfilment",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
        ),
    )
    op.create_table(
        "payment_refunds",
        sa.Column("stripe_refund_id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_payment_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("stripe_refund_id", name=op.f("pk_payment_refunds")),
    )
    op.create_index(
        op.f("ix_payment_refunds_payment_id"), "payment_refunds", ["payment_id"], unique=False
    )
    grant_app_role(read_write=["payment_refunds"], append_only=[])
    # The SQL is built from this module's constants only.
    op.execute(f"UPDATE stripe_events SET payload = {projection('payload')}")  # noqa: S608


def downgrade() -> None:
    # The payloads stay projected: what was dropped is gone.
    op.drop_index(op.f("ix_payment_refunds_payment_id"), table_name="payment_refunds")
    op.drop_table("payment_refunds")
    op.drop_column("payments", "refunded_after_fulfilment")
