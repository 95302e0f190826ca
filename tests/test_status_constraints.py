"""Each status set is written once, in app/models/status.py: the database's CHECK constraints
(built by the migrations) hold exactly the enums' values, and the schemas list the same values."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, get_args

import pytest
from sqlalchemy import CheckConstraint, text
from sqlalchemy.orm import Session

from app.models import Base
from app.models.status import (
    SYSTEM_CANCELLATION_REASONS,
    AdjustmentReason,
    AlertTopic,
    CancellationReason,
    LogLevel,
    LogSource,
    LotStatus,
    OrderStatus,
    OutboxStatus,
    PaymentStatus,
    PharmacyAuthKind,
    PharmacyExchangeOutcome,
    PharmacyOperation,
    PharmacySubmissionStatus,
    ReconciliationKind,
    ReconciliationState,
    StaffRole,
    StockMovementReason,
)
from app.orders.schemas import StaffCancellationReason

# (table, constraint) -> the enum whose values the column is limited to.
CONSTRAINED: dict[tuple[str, str], type[StrEnum]] = {
    ("orders", "ck_orders_status"): OrderStatus,
    ("orders", "ck_orders_cancellation_code"): CancellationReason,
    ("lots", "ck_lots_status"): LotStatus,
    ("stock_movements", "ck_stock_movements_reason"): StockMovementReason,
    ("outbox_messages", "ck_outbox_messages_status"): OutboxStatus,
    ("users", "ck_users_role"): StaffRole,
    ("reconciliation_exceptions", "ck_reconciliation_exceptions_kind"): ReconciliationKind,
    ("alerts", "ck_alerts_topic"): AlertTopic,
    ("alert_subscriptions", "ck_alert_subscriptions_topic"): AlertTopic,
    ("pharmacies", "ck_pharmacies_auth_kind"): PharmacyAuthKind,
    ("pharmacy_submissions", "ck_pharmacy_submissions_status"): PharmacySubmissionStatus,
    ("pharmacy_logs", "ck_pharmacy_logs_operation"): PharmacyOperation,
    ("pharmacy_logs", "ck_pharmacy_logs_outcome"): PharmacyExchangeOutcome,
    ("system_log", "ck_system_log_level"): LogLevel,
    ("system_log", "ck_system_log_source"): LogSource,
}


def _database_checks(db: Session) -> dict[tuple[str, str], str]:
    rows = db.execute(
        text(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)"
            " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE k.contype = 'c' AND n.nspname = current_schema()"
        )
    ).all()
    return {(table, name): definition for table, name, definition in rows}


def _listed_values(definition: str) -> list[str]:
    # `CHECK (((status)::text = ANY ((ARRAY['pending'::character varying, ...])::text[])))`
    return re.findall(r"'([^']*)'", definition)


@pytest.mark.parametrize(
    ("table", "constraint"), sorted(CONSTRAINED), ids=[name for _, name in sorted(CONSTRAINED)]
)
def test_the_migrated_check_constraint_holds_exactly_the_enum_values(
    db: Session, table: str, constraint: str
) -> None:
    definition = _database_checks(db)[(table, constraint)]
    assert _listed_values(definition) == [member.value for member in CONSTRAINED[table, constraint]]


def test_every_check_constraint_listing_values_has_its_enum(db: Session) -> None:
    """A new value-list constraint needs an enum here, or it would be defined twice again."""
    listing = {
        key for key, definition in _database_checks(db).items() if _listed_values(definition)
    }
    assert listing == set(CONSTRAINED)


def test_the_models_build_their_constraints_from_the_enums() -> None:
    for (table, constraint), enum in CONSTRAINED.items():
        checks = {
            c.name: str(c.sqltext)
            for c in Base.metadata.tables[table].constraints
            if isinstance(c, CheckConstraint)
        }
        assert _listed_values(checks[constraint]) == [member.value for member in enum]


def test_staff_may_give_every_cancellation_reason_the_system_does_not_set() -> None:
    assert set(get_args(StaffCancellationReason)) == {
        reason.value for reason in CancellationReason if reason not in SYSTEM_CANCELLATION_REASONS
    }


def test_the_openapi_document_lists_the_values_of_each_status(app: Any) -> None:
    schemas = app.openapi()["components"]["schemas"]
    for enum in (
        OrderStatus,
        CancellationReason,
        PaymentStatus,
        LotStatus,
        StockMovementReason,
        AdjustmentReason,
        OutboxStatus,
        StaffRole,
        AlertTopic,
        ReconciliationKind,
        ReconciliationState,
        PharmacySubmissionStatus,
        PharmacyAuthKind,
    ):
        assert schemas[enum.__name__]["enum"] == [member.value for member in enum]
