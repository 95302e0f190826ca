"""ORM models, one table per module. Importing this package registers every table."""

from app.models.alert import Alert
from app.models.alert_subscription import AlertSubscription
from app.models.audit_entry import AuditEntry
from app.models.base import Base
from app.models.checkout_link import CheckoutLink
from app.models.lot import Lot
from app.models.lot_allocation import LotAllocation
from app.models.order import Order
from app.models.order_item import OrderItem
from app.models.outbox_message import OutboxMessage
from app.models.patient import Patient
from app.models.payment import Payment
from app.models.payment_refund import PaymentRefund
from app.models.pharmacy import Pharmacy
from app.models.pharmacy_log import PharmacyLog
from app.models.pharmacy_submission import PharmacySubmission
from app.models.product import Product
from app.models.rate_limit_counter import RateLimitCounter
from app.models.reconciliation_exception import ReconciliationException
from app.models.reconciliation_run import ReconciliationRun
from app.models.stock_movement import StockMovement
from app.models.stripe_event import StripeEvent
from app.models.system_log_entry import SystemLogEntry
from app.models.user import User

__all__ = [
    "Alert",
    "AlertSubscription",
    "AuditEntry",
    "Base",
    "CheckoutLink",
    "Lot",
    "LotAllocation",
    "Order",
    "OrderItem",
    "OutboxMessage",
    "Patient",
    "Payment",
    "PaymentRefund",
    "Pharmacy",
    "PharmacyLog",
    "PharmacySubmission",
    "Product",
    "RateLimitCounter",
    "ReconciliationException",
    "ReconciliationRun",
    "StockMovement",
    "StripeEvent",
    "SystemLogEntry",
    "User",
]
