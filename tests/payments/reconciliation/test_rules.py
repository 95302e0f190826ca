"""The comparison rules on Stripe-shaped objects, for what the local stand-in cannot produce
(disputes, a currency other than the one asked for, amount_received) or what is quicker to
state as data: which disagreements are found, and which may be repaired from Stripe's state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.integrations.stripe.listing import StripeState
from app.models import Payment
from app.payments.reconciliation_service import (
    InvalidPeriod,
    PortalSide,
    check_period,
    compare,
    repair_event_id,
)

ORDER = uuid.uuid4()


def payment(**fields: Any) -> Payment:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_id": ORDER,
        "stripe_payment_intent_id": "pi_rule",
        "status": "succeeded",
        "amount_cents": 2598,
        "currency": "usd",
        "refunded_cents": 0,
        "disputed": False,
    }
    return Payment(**(values | fields))


def intent(**fields: Any) -> dict[str, Any]:
    charge = {"id": "ch_rule", "object": "charge", "amount_refunded": 0}
    charge |= fields.pop("charge", {})
    return {
        "id": "pi_rule",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 2598,
        "amount_received": 2598,
        "currency": "usd",
        "metadata": {"order_id": str(ORDER)},
        "latest_charge": charge,
    } | fields


def found(state: StripeState, paid: Payment, refunds: dict[str, str] | None = None) -> list[Any]:
    portal = PortalSide({paid.stripe_payment_intent_id: paid}, refunds or {}, {ORDER})
    return compare(state, portal)


def test_payments_that_agree_have_nothing_to_say() -> None:
    assert found(StripeState([intent()]), payment()) == []


def test_a_dispute_seen_on_the_charge_or_listed_is_recorded_and_told_to_the_portal() -> None:
    dispute = {
        "id": "dp_rule",
        "object": "dispute",
        "payment_intent": "pi_rule",
        "amount": 2598,
        "currency": "usd",
        "status": "needs_response",
        "reason": "fraudulent",
        "evidence": {"customer_name": "must not be copied"},
    }
    listed = StripeState([intent(charge={"disputed": True})], disputes={"pi_rule": [dispute]})
    (finding,) = found(listed, payment())
    assert (finding.kind, finding.stripe_object_id) == ("disputed", "pi_rule")
    assert finding.details == {
        "dispute_id": "dp_rule",
        "dispute_status": "needs_response",
        "reason": "fraudulent",
        "known_here": False,
    }
    assert finding.repair is not None
    assert finding.repair["type"] == "charge.dispute.created"
    assert finding.repair["id"] == repair_event_id("charge.dispute.created", "dp_rule", "created")
    assert "evidence" not in finding.repair["data"]["object"]

    # Seen on the charge only (disputes not listable): the charge names it.
    flagged = StripeState([intent(charge={"disputed": True})], disputes_listed=False)
    (finding,) = found(flagged, payment())
    assert finding.details["dispute_id"] == "ch_rule"
    # Known here already: still an exception for staff, nothing to apply.
    (finding,) = found(flagged, payment(disputed=True))
    assert finding.repair is None


@pytest.mark.parametrize(
    ("status", "disputed_here", "repair"),
    [
        ("won", True, "charge.dispute.closed"),  # the close was missed: clear the flag
        ("won", False, None),  # never open here, and need not be
        ("warning_closed", True, "charge.dispute.closed"),
        ("lost", False, "charge.dispute.closed"),  # recorded as lost, flag set
        ("lost", True, "charge.dispute.closed"),  # the loss itself is still to record
    ],
)
def test_a_closed_dispute_is_told_to_the_portal_as_it_ended(
    status: str, disputed_here: bool, repair: str | None
) -> None:
    dispute = {"id": "dp_rule", "payment_intent": "pi_rule", "amount": 2598, "status": status}
    listed = StripeState([intent(charge={"disputed": True})], disputes={"pi_rule": [dispute]})

    (finding,) = found(listed, payment(disputed=disputed_here))

    assert finding.kind == "disputed"
    assert (finding.repair["type"] if finding.repair else None) == repair
    if finding.repair:
        assert finding.repair["id"] == repair_event_id(repair or "", "dp_rule", status)


def test_a_currency_or_amount_stripe_took_differently_is_never_applied() -> None:
    other_currency = StripeState([intent(currency="eur")])
    kinds = {f.kind: f for f in found(other_currency, payment(status="requires_payment_method"))}
    assert set(kinds) == {"currency_differs", "missed_payment"}
    assert kinds["missed_payment"].repair is None
    assert kinds["currency_differs"].details["portal_currency"] == "usd"

    less_received = StripeState([intent(amount_received=2000)])
    (finding,) = found(less_received, payment())
    assert (finding.kind, finding.expected_cents, finding.actual_cents) == (
        "amount_differs",
        2598,
        2000,
    )


def test_more_refunded_here_than_at_stripe_is_recorded() -> None:
    (finding,) = found(StripeState([intent()]), payment(refunded_cents=1000))
    assert (finding.kind, finding.expected_cents, finding.actual_cents) == (
        "refunded_here_only",
        1000,
        0,
    )


def test_a_refund_is_repaired_only_when_the_payment_is_settled_here() -> None:
    refund = {"id": "re_rule", "object": "refund", "amount": 500, "status": "succeeded"}
    state = StripeState([intent(charge={"amount_refunded": 500})], refunds={"pi_rule": [refund]})
    (settled,) = found(state, payment(refunded_cents=0))
    assert (settled.kind, settled.stripe_object_id) == ("missed_refund", "re_rule")
    assert settled.repair is not None
    assert settled.repair["data"]["object"]["payment_intent"] == "pi_rule"
    # Recorded already: nothing.
    assert found(state, payment(refunded_cents=500), {"re_rule": "succeeded"}) == []
    # A failed refund gave nothing back: nothing either.
    failed = StripeState([intent()], refunds={"pi_rule": [refund | {"status": "failed"}]})
    assert found(failed, payment()) == []


def test_an_intent_without_a_portal_order_id_or_money_is_not_the_portals_concern() -> None:
    foreign = intent(id="pi_other", metadata={})
    abandoned = intent(id="pi_left", status="requires_payment_method")
    portal = PortalSide({}, {}, set())
    assert compare(StripeState([foreign, abandoned]), portal) == []


def test_a_period_has_a_zone_an_order_and_at_most_92_days() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    check_period(now - timedelta(days=92), now, now=now)
    for start, end in (
        (now, now),
        (now, now - timedelta(seconds=1)),
        (now - timedelta(days=92, seconds=1), now),
        (now + timedelta(days=1), now + timedelta(days=2)),
        (datetime(2026, 11, 1), datetime(2026, 11, 2)),  # no time zone
    ):
        with pytest.raises(InvalidPeriod):
            check_period(start, end, now=now)
