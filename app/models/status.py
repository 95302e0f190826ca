"""Every closed set of codes the portal stores or shows, one `StrEnum` each.

A value is written here once: the tables' CHECK constraints are built from these enums
(`one_of`), the state machines are keyed by them and the schemas use them, so the OpenAPI
document lists the values. tests/test_status_constraints.py compares each constraint in the
migrated database with its enum: a value added here needs a migration, and the test says so.

A `StrEnum` member is a `str` equal to its value: it is stored, compared, logged and serialised
as that string.
"""

from __future__ import annotations

from enum import StrEnum


def one_of(column: str, values: type[StrEnum]) -> str:
    """The text of a CHECK constraint: `column` holds one of the enum's values (or NULL)."""
    return f"{column} IN (" + ", ".join(f"'{member.value}'" for member in values) + ")"


class OrderStatus(StrEnum):
    """An order's place in its life (the transitions are in app/orders/state.py)."""

    PENDING = "pending"
    PAID = "paid"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


class CancellationReason(StrEnum):
    """Why an order was cancelled: a code, kept in clear. Details go in the encrypted note."""

    # Chosen by staff.
    PATIENT_REQUEST = "patient_request"
    PRESCRIBER_CHANGE = "prescriber_change"
    DUPLICATE_ORDER = "duplicate_order"
    ENTERED_IN_ERROR = "entered_in_error"
    OUT_OF_STOCK = "out_of_stock"
    OTHER = "other"
    # Set by the system.
    PAYMENT_EXPIRED = "payment_expired"
    REFUNDED_AT_STRIPE = "refunded_at_stripe"


SYSTEM_CANCELLATION_REASONS = frozenset(
    {CancellationReason.PAYMENT_EXPIRED, CancellationReason.REFUNDED_AT_STRIPE}
)


class PaymentStatus(StrEnum):
    """A Stripe PaymentIntent's status, as the portal mirrors it (no CHECK: Stripe owns it)."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"  # Stripe's spelling


class RefundStatus(StrEnum):
    """A Stripe refund's status, as the portal mirrors it (no CHECK: Stripe owns it)."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class LotStatus(StrEnum):
    """Whether a lot's units may be sold (the transitions are in app/inventory/service.py)."""

    AVAILABLE = "available"
    QUARANTINED = "quarantined"
    RECALLED = "recalled"
    EXPIRED = "expired"


class StockMovementReason(StrEnum):
    """Why a lot's counters moved: one ledger row each."""

    RECEIPT = "receipt"
    RESERVATION = "reservation"
    RELEASE = "release"
    FULFILMENT = "fulfilment"
    ADJUSTMENT = "adjustment"
    EXPIRY = "expiry"
    RECALL = "recall"


class AdjustmentReason(StrEnum):
    """The code of a counted correction (a `StockMovementReason.ADJUSTMENT` row's reason_code)."""

    DAMAGED = "damaged"
    COUNT_CORRECTION = "count_correction"
    RETURNED = "returned"
    EXPIRED = "expired"
    OTHER = "other"


class OutboxStatus(StrEnum):
    """An outgoing call: waiting (or retrying), done, or given up on until an admin re-sends."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class StaffRole(StrEnum):
    """The role a member of staff holds in the users table (app/actor.py's `Role` adds the
    portal's own actors, which are never stored there)."""

    ADMIN = "admin"
    DOCTOR = "doctor"


class LinkState(StrEnum):
    """What a patient's checkout link leads to; derived on each visit, never stored."""

    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    LOCKED = "locked"
    CLOSED = "closed"  # the order is no longer payable (paid, cancelled): status page only


class OrderEvent(StrEnum):
    """A milestone of an order's life, as its timeline shows it (derived from the audit log
    and the outbox, never stored)."""

    CREATED = "created"
    EDITED = "edited"
    LINK_SENT = "link_sent"
    LINK_OPENED = "link_opened"
    LINK_LOCKED = "link_locked"
    LINK_REVOKED = "link_revoked"
    PAYMENT_STARTED = "payment_started"
    PAYMENT_PROCESSING = "payment_processing"
    PAYMENT_FAILED = "payment_failed"
    PAID = "paid"
    PHARMACY_QUEUED = "pharmacy_queued"
    PHARMACY_HELD = "pharmacy_held"
    SUBMITTED_TO_PHARMACY = "submitted_to_pharmacy"
    PHARMACY_ACCEPTED = "pharmacy_accepted"
    PHARMACY_REJECTED = "pharmacy_rejected"
    DISPENSED = "dispensed"
    PHARMACY_DEAD_LETTER = "pharmacy_dead_letter"
    PHARMACY_RESENT = "pharmacy_resent"
    PHARMACY_CANCEL_QUEUED = "pharmacy_cancel_queued"
    PHARMACY_CANCEL_REFUSED = "pharmacy_cancel_refused"
    PHARMACY_CANCELLED = "pharmacy_cancelled"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    REFUND_REQUESTED = "refund_requested"
    REFUND_FAILED = "refund_failed"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    PAYMENT_REPAIRED = "payment_repaired"


class ReconciliationKind(StrEnum):
    """How the portal's payments disagree with Stripe's (a `reconciliation_exceptions` row)."""

    # Succeeded at Stripe, not here: a missed webhook (repaired with Stripe's state).
    MISSED_PAYMENT = "missed_payment"
    # A refund made at Stripe and not recorded here (repaired with Stripe's state).
    MISSED_REFUND = "missed_refund"
    # A dispute at Stripe: the portal's flag is set from Stripe's state, staff answer it.
    DISPUTED = "disputed"
    # Succeeded here, not at Stripe (or the intent is gone there).
    NOT_PAID_AT_STRIPE = "not_paid_at_stripe"
    # Stripe's amount or currency is not the payment's.
    AMOUNT_DIFFERS = "amount_differs"
    CURRENCY_DIFFERS = "currency_differs"
    # More refunded here than at Stripe.
    REFUNDED_HERE_ONLY = "refunded_here_only"
    # An intent naming an order the portal does not know (or that it holds no payment for).
    UNKNOWN_INTENT = "unknown_intent"


class ReconciliationState(StrEnum):
    """Where a reconciliation exception stands; derived from its timestamps, never stored."""

    OPEN = "open"
    REPAIRED = "repaired"
    RESOLVED = "resolved"


class AlertTopic(StrEnum):
    """What an alert to staff is about; staff subscribe per topic (app/alerts)."""

    STOCK = "stock"  # low stock, lots expiring, products whose only stock is expired
    RECONCILIATION = "reconciliation"  # the portal's payments disagree with Stripe's
    DATA_QUALITY = "data_quality"  # a data-quality check failed
    PHARMACY = "pharmacy"  # the pharmacy link needs attention


class AlertState(StrEnum):
    """Whether an alert's condition still holds; derived from `cleared_at`, never stored."""

    OPEN = "open"
    CLEARED = "cleared"


class PharmacySubmissionStatus(StrEnum):
    """Where a prescription submission to a pharmacy stands (app/pharmacy/service.py moves it).

    `pending` waits for delivery (or a retry), `sending` is claimed by a worker under a lease,
    `submitted`/`accepted`/`rejected`/`dispensed`/`cancelled` mirror what the pharmacy says, and
    `dead_letter` waits for an admin (refused for good, out of attempts, or no pharmacy).
    """

    PENDING = "pending"
    SENDING = "sending"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"


class PharmacyAuthKind(StrEnum):
    """How the portal authenticates to a pharmacy's API (connectors.base.AuthKind)."""

    NONE = "none"
    API_KEY = "api_key"
    OAUTH2 = "oauth2"
    MTLS = "mtls"


class PharmacyOperation(StrEnum):
    """What an exchange with a pharmacy was for (a `pharmacy_logs` row)."""

    SUBMIT = "submit"
    STATUS = "status"
    CANCEL = "cancel"
    HEALTHCHECK = "healthcheck"


class PharmacyExchangeOutcome(StrEnum):
    """How an exchange with a pharmacy ended, as the delivery understood it."""

    OK = "ok"
    TRANSIENT_ERROR = "transient_error"
    PERMANENT_ERROR = "permanent_error"
    NOT_CANCELLABLE = "not_cancellable"


class LogLevel(StrEnum):
    """The levels kept in the system log (warnings and worse)."""

    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class LogSource(StrEnum):
    """Which kind of process wrote a system log record."""

    API = "api"
    WORKER = "worker"
    PIPELINES = "pipelines"
    COMMAND = "command"
