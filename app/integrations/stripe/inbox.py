"""What the webhook inbox keeps of a Stripe event: an allow-listed projection.

Stripe objects can carry a payer's name, e-mail, phone and address (`billing_details`,
`receipt_email`, `shipping`, dispute `evidence`, free-text `description` and `metadata`). The
inbox is a record of what arrived and what it did, so it keeps only ids, type, status, amounts,
currency, times and the references the portal follows; anything else is dropped before the row
is written. Migration 0009 rewrote the rows stored before, with the same rules in SQL.
"""

from __future__ import annotations

from typing import Any

EVENT_FIELDS = ("id", "object", "type", "created", "api_version", "livemode")
# Plain values (string, number, boolean) of PaymentIntents, charges, refunds and disputes.
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
    "reason",  # refund and dispute reasons are Stripe's codes (e.g. "fraudulent")
    "failure_reason",
    "cancellation_reason",
)
# Other objects, kept as their id (Stripe sends a string, or the object when expanded).
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


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _pick(source: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: source[f] for f in fields if _plain(source.get(f))}


def _reference(value: Any) -> Any:
    if isinstance(value, dict):
        value = value.get("id")
    return value if _plain(value) else None


def _refund(refund: Any) -> dict[str, Any]:
    if not isinstance(refund, dict):
        return {}
    kept = _pick(refund, REFUND_FIELDS)
    for name in ("payment_intent", "charge"):
        if (ref := _reference(refund.get(name))) is not None:
            kept[name] = ref
    if isinstance(refund.get("metadata"), dict):
        kept["metadata"] = _pick(refund["metadata"], METADATA_FIELDS)
    return kept


def _object(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    kept = _pick(obj, OBJECT_FIELDS)
    for name in REFERENCES:
        if (ref := _reference(obj.get(name))) is not None:
            kept[name] = ref
    types = obj.get("payment_method_types")
    if isinstance(types, list):
        kept["payment_method_types"] = [t for t in types if isinstance(t, str)]
    if isinstance(obj.get("metadata"), dict):
        kept["metadata"] = _pick(obj["metadata"], METADATA_FIELDS)
    if isinstance(obj.get("last_payment_error"), dict):
        kept["last_payment_error"] = _pick(obj["last_payment_error"], ERROR_FIELDS)
    refunds = obj.get("refunds")
    if isinstance(refunds, dict) and isinstance(refunds.get("data"), list):
        kept["refunds"] = {"data": [_refund(r) for r in refunds["data"]]}
    return kept


def stored_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a verified Stripe event that the inbox stores."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return {**_pick(event, EVENT_FIELDS), "data": {"object": _object(obj)}}
