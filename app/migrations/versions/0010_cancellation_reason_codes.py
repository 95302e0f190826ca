"""cancellation reason codes in clear, free-text notes encrypted

An order's free-text cancellation reason could carry health details, in clear, in the order and
in the audit log. It becomes a code (`cancellation_code`, one of a fixed list) and an optional
note encrypted like other PHI (`cancellation_note_encrypted`, AES-GCM bound to the order's row
and this column). Existing reasons move over: the ones the portal itself wrote map to their
codes; any other text becomes `other` with the text as the encrypted note. That needs the PHI
keys (`PHI_ENCRYPTION_KEYS`, `PHI_ACTIVE_KEY_ID`) in the migration's environment, as the API
has them; the downgrade decrypts the notes back with the same keys.

Audit rows already written keep their clear-text reasons: the log is append-only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CODES = (
    "patient_request",
    "prescriber_change",
    "duplicate_order",
    "entered_in_error",
    "out_of_stock",
    "other",
    "payment_expired",
    "refunded_at_stripe",
)
# What the portal wrote before codes existed (the expiry and the API's default).
SYSTEM_REASONS = {"payment window expired": "payment_expired", "cancelled by staff": "other"}
RESTORED = {code: reason for reason, code in SYSTEM_REASONS.items()}
BATCH = 500


ORDERS = sa.table(
    "orders",
    sa.column("id", sa.Uuid()),
    sa.column("status", sa.String()),
    sa.column("cancellation_reason", sa.String()),
    sa.column("cancellation_code", sa.String()),
    sa.column("cancellation_note_encrypted", sa.Text()),
)


def _note_context(order_id: object) -> str:
    # The context app.orders.service.cancellation_note_context seals notes with.
    return f"orders.cancellation_note.{order_id}"


def upgrade() -> None:
    op.add_column("orders", sa.Column("cancellation_code", sa.String(length=32), nullable=True))
    op.add_column("orders", sa.Column("cancellation_note_encrypted", sa.Text(), nullable=True))
    connection = op.get_bind()
    # Reasons the portal wrote itself (or already codes) map in one statement.
    normalised = sa.func.lower(sa.func.trim(ORDERS.c.cancellation_reason))
    mapping = {**SYSTEM_REASONS, **{code: code for code in CODES}}
    connection.execute(
        ORDERS.update()
        .where(normalised.in_(list(mapping)))
        .values(cancellation_code=sa.case(mapping, value=normalised))
    )
    # Any other text is the doctor's words: `other`, with the text sealed as the note.
    free_text = (
        sa.select(ORDERS.c.id, ORDERS.c.cancellation_reason)
        .where(ORDERS.c.cancellation_code.is_(None), ORDERS.c.cancellation_reason.is_not(None))
        .order_by(ORDERS.c.id)
        .limit(BATCH)
    )
    seal = (
        ORDERS.update()
        .where(ORDERS.c.id == sa.bindparam("order_id"))
        .values(cancellation_code="other", cancellation_note_encrypted=sa.bindparam("note"))
    )
    while rows := connection.execute(free_text).all():
        from app import phi  # only when there is something to encrypt

        connection.execute(
            seal,
            [
                {"order_id": r.id, "note": phi.encrypt(r.cancellation_reason, _note_context(r.id))}
                for r in rows
            ],
        )
    # A cancelled order without any reason (none should exist): `other`.
    connection.execute(
        ORDERS.update()
        .where(ORDERS.c.status == "cancelled", ORDERS.c.cancellation_code.is_(None))
        .values(cancellation_code="other")
    )
    op.create_check_constraint(
        op.f("ck_orders_cancellation_code"),
        "orders",
        ORDERS.c.cancellation_code.in_(CODES),
    )
    op.drop_column("orders", "cancellation_reason")


def downgrade() -> None:
    op.add_column("orders", sa.Column("cancellation_reason", sa.String(length=200), nullable=True))
    connection = op.get_bind()
    code = ORDERS.c.cancellation_code
    connection.execute(
        ORDERS.update()
        .where(code.is_not(None), ORDERS.c.cancellation_note_encrypted.is_(None))
        .values(cancellation_reason=sa.case(RESTORED, value=code, else_=code))
    )
    noted = (
        sa.select(ORDERS.c.id, code, ORDERS.c.cancellation_note_encrypted)
        .where(
            ORDERS.c.cancellation_note_encrypted.is_not(None),
            ORDERS.c.cancellation_reason.is_(None),
        )
        .order_by(ORDERS.c.id)
        .limit(BATCH)
    )
    restore = (
        ORDERS.update()
        .where(ORDERS.c.id == sa.bindparam("order_id"))
        .values(cancellation_reason=sa.bindparam("reason"))
    )
    while rows := connection.execute(noted).all():
        from app import phi

        restored = []
        for r in rows:
            note = phi.decrypt(r.cancellation_note_encrypted, _note_context(r.id))
            reason = note if r.cancellation_code == "other" else f"{r.cancellation_code}: {note}"
            restored.append({"order_id": r.id, "reason": reason[:200]})
        connection.execute(restore, restored)
    op.drop_constraint(op.f("ck_orders_cancellation_code"), "orders", type_="check")
    op.drop_column("orders", "cancellation_note_encrypted")
    op.drop_column("orders", "cancellation_code")
