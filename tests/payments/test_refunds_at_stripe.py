"""Refunds and disputes made at Stripe (not through the portal) reach the portal through signed
webhooks: each refund is counted once whatever the order and repetition of its events; a full
refund cancels a paid order and releases its stock without a second refund; a refund after
shipping is recorded and flagged; fulfil refuses an order whose money is gone or disputed, until
the dispute is won (a lost one is recorded and keeps the order from shipping)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.integrations.stripe.refunds import REFUND_TOPIC
from app.models import AuditEntry, OutboxMessage, Payment, PaymentRefund
from tests.fixtures.orders import ORDERS, get_order, lot_counters
from tests.fixtures.patients import Headers, Json, audit_entries
from tests.fixtures.payments import create_intent, deliver, order_status, payment_of
from tests.fixtures.problems import assert_problem
from tests.fixtures.stripe import LocalStripe, charge_event, intent_event, stripe_event

PAYMENTS = "/api/v1/payments"


def paid_at_stripe(
    client: TestClient, doctor: Headers, localstripe: LocalStripe, order: Json
) -> str:
    """The patient pays by card at the stand-in, whose own event is delivered, signed."""
    intent_id = str(create_intent(client, doctor, order["id"])["payment_intent_id"])
    localstripe.pay_by_card(intent_id)
    (event,) = localstripe.events(intent_id, "payment_intent.succeeded")
    assert deliver(client, event)["outcome"] == "order paid"
    return intent_id


def refund_at_stripe(
    localstripe: LocalStripe, intent_id: str, amount: int | None = None
) -> dict[str, Any]:
    """What a clinic employee does in the Stripe Dashboard."""
    data = {"payment_intent": intent_id} | ({"amount": str(amount)} if amount else {})
    return localstripe.post("/v1/refunds", data)


def charge_of(localstripe: LocalStripe, intent_id: str) -> dict[str, Any]:
    latest = localstripe.intent(intent_id)["latest_charge"]
    return localstripe.get(f"/v1/charges/{latest['id'] if isinstance(latest, dict) else latest}")


def portal_payment(client: TestClient, admin: Headers, order_id: str) -> Json:
    response = client.get(PAYMENTS, params={"order_id": order_id}, headers=admin)
    assert response.status_code == 200, response.text
    (payment,) = response.json()["items"]
    return payment  # type: ignore[no-any-return]


def lot_of(order: Json) -> str:
    (item,) = order["items"]
    (allocation,) = item["allocations"]
    return str(allocation["lot_id"])


def refund_messages(db: Session) -> list[OutboxMessage]:
    db.expire_all()
    return list(db.scalars(select(OutboxMessage).where(OutboxMessage.topic == REFUND_TOPIC)))


def actions(db: Session, order_id: str, prefix: str) -> list[AuditEntry]:
    db.expire_all()
    return list(
        db.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_id == order_id, AuditEntry.action.startswith(prefix))
            .order_by(AuditEntry.id)
        )
    )


def test_a_full_refund_at_stripe_cancels_the_order_and_releases_its_stock(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    intent_id = paid_at_stripe(client, doctor, localstripe, order)
    lot_id = lot_of(order)
    assert lot_counters(db, lot_id) == (100, 2)
    total = order["total_cents"]

    refund = refund_at_stripe(localstripe, intent_id)
    charge = charge_of(localstripe, intent_id)
    assert (charge["amount_refunded"], refund["amount"]) == (total, total)
    refund_created = stripe_event("refund.created", refund)
    charge_refunded = stripe_event("charge.refunded", charge)

    # The refund's own event arrives first (Stripe does not promise an order).
    answer = deliver(client, refund_created)
    assert answer["outcome"] == f"refunded {total} cents in full; order cancelled"
    payment = portal_payment(client, admin, order["id"])
    assert (payment["refunded_cents"], payment["status"]) == (total, "succeeded")
    assert get_order(client, doctor, order["id"])["status"] == "cancelled"
    assert lot_counters(db, lot_id) == (100, 0)  # the reserved units are sellable again
    # No second refund: Stripe holds exactly the one the employee made.
    assert refund_messages(db) == []
    assert len(localstripe.refunds(intent_id)) == 1

    # The charge's event, then every event again, changes nothing.
    assert deliver(client, charge_refunded)["outcome"] == f"refund recorded; {total} cents refunded"
    for event in (refund_created, charge_refunded):
        assert deliver(client, event)["outcome"].startswith("duplicate")
    assert payment_of(db, intent_id).refunded_cents == total
    assert refund_messages(db) == []
    (cancelled,) = actions(db, order["id"], "order.cancelled")
    assert cancelled.actor_subject == "system:stripe-webhook"
    assert (cancelled.before, cancelled.after["status"]) == ({"status": "paid"}, "cancelled")
    (refunded,) = actions(db, order["id"], "payment.refunded")
    assert refunded.actor_subject == "system:stripe-webhook"
    assert refunded.before == {"refunded_cents": 0}
    assert refunded.after == {
        "payment_intent_id": intent_id,
        "refunded_cents": total,
        "amount_cents": total,
        "order_status": "paid",
    }
    (recorded,) = actions(db, order["id"], "payment.refund_recorded")
    assert recorded.before is None
    assert recorded.after == {
        "payment_intent_id": intent_id,
        "refund_id": refund["id"],
        "amount_cents": total,
        "status": "succeeded",
    }

    # A cancelled order cannot be shipped.
    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    assert_problem(response, 409, "/problems/invalid-state-transition")
    assert lot_counters(db, lot_id) == (100, 0)


def test_a_partial_refund_at_stripe_is_recorded_and_the_order_still_ships(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    intent_id = paid_at_stripe(client, doctor, localstripe, order)
    refund = refund_at_stripe(localstripe, intent_id, 1000)
    charge = charge_of(localstripe, intent_id)

    for event in (stripe_event("charge.refunded", charge), stripe_event("refund.created", refund)):
        deliver(client, event)

    assert portal_payment(client, admin, order["id"])["refunded_cents"] == 1000
    assert order_status(db, order["id"]) == "paid"
    assert refund_messages(db) == []
    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "fulfilled"


@pytest.mark.parametrize("full", [False, True], ids=["partial", "full"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refund_events_in_any_order_and_repeated_count_each_refund_once(
    client: TestClient,
    db: Session,
    admin: Headers,
    order: Json,
    intent_id: str,
    full: bool,
    seed: int,
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    total = order["total_cents"]
    charge_id = "ch_" + uuid.uuid4().hex[:14]

    def refund(refund_id: str, amount: int, status: str) -> dict[str, Any]:
        return {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "currency": "usd",
            "status": status,
            "charge": charge_id,
            "payment_intent": intent_id,
        }

    def charge(*refunds: dict[str, Any]) -> dict[str, Any]:
        return stripe_event(
            "charge.refunded",
            {
                "id": charge_id,
                "object": "charge",
                "amount": total,
                "amount_refunded": sum(r["amount"] for r in refunds),
                "payment_intent": intent_id,
                "refunded": sum(r["amount"] for r in refunds) == total,
                "refunds": {"object": "list", "data": list(refunds)},
            },
        )

    first, second = refund("re_a" + uuid.uuid4().hex[:8], 1000, "succeeded"), None
    events = [
        stripe_event("refund.created", {**first, "status": "pending"}),
        stripe_event("refund.updated", first),
        stripe_event("charge.refund.updated", first),
        charge(first),
    ]
    expected = 1000
    if full:
        second = refund("re_b" + uuid.uuid4().hex[:8], total - 1000, "succeeded")
        events += [stripe_event("refund.created", second), charge(first, second)]
        expected = total
    rng = random.Random(seed)
    deliveries = events + rng.sample(events, 3)
    rng.shuffle(deliveries)

    for event in deliveries:
        deliver(client, event)

    assert portal_payment(client, admin, order["id"])["refunded_cents"] == expected
    db.expire_all()
    stored = {
        r.stripe_refund_id: (r.amount_cents, r.status) for r in db.scalars(select(PaymentRefund))
    }
    wanted = {first["id"]: (1000, "succeeded")}
    if second is not None:
        wanted[second["id"]] = (total - 1000, "succeeded")
    assert {k: v for k, v in stored.items() if k in wanted} == wanted
    assert order_status(db, order["id"]) == ("cancelled" if full else "paid")
    assert len(actions(db, order["id"], "order.cancelled")) == (1 if full else 0)
    assert refund_messages(db) == []  # never a refund of our own on top
    # The refunded amount only ever grew, and each growth is one audit row.
    amounts = [e.after["refunded_cents"] for e in actions(db, order["id"], "payment.refunded")]
    assert amounts == sorted(set(amounts)) and amounts[-1] == expected


def test_a_dispute_stops_fulfilment(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    lot_id = lot_of(order)
    dispute = charge_event(
        "charge.dispute.created", intent_id, amount=order["total_cents"], reason="fraudulent"
    )
    assert deliver(client, dispute)["outcome"] == "dispute recorded"
    assert deliver(client, dispute)["outcome"].startswith("duplicate")

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    problem = assert_problem(response, 409, "/problems/payment-disputed")
    assert "disputed" in problem["detail"]
    assert order_status(db, order["id"]) == "paid"
    assert lot_counters(db, lot_id) == (100, 2)
    assert actions(db, order["id"], "order.fulfilled") == []
    (entry,) = audit_entries(db, order["id"], "payment.disputed")
    assert (entry.before, entry.after) == (
        {"disputed": False},
        {"disputed": True, "payment_intent_id": intent_id, "reason": "fraudulent"},
    )


@pytest.mark.parametrize("kind", ["refund.failed", "charge.refund.updated", "refund.updated"])
def test_a_full_refund_that_fails_afterwards_is_noticed_and_shows_what_is_still_owed(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str, kind: str
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    total = order["total_cents"]
    refund = {
        "id": f"re_{uuid.uuid4().hex[:14]}",
        "object": "refund",
        "amount": total,
        "currency": "usd",
        "payment_intent": intent_id,
        "status": "pending",
    }
    created = deliver(client, stripe_event("refund.created", refund))
    assert created["outcome"] == f"refunded {total} cents in full; order cancelled"

    failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    answer = deliver(client, stripe_event(kind, failed))

    assert (
        answer["outcome"]
        == f"refund failed: {total} cents not returned; 0 of {total} cents refunded"
    )
    assert portal_payment(client, admin, order["id"])["refunded_cents"] == 0
    (entry,) = audit_entries(db, order["id"], "payment.refund_failed")
    assert (entry.before, entry.after["refunded_cents"], entry.after["failure_reason"]) == (
        {"refunded_cents": total},
        0,
        "expired_or_canceled_card",
    )
    # The same failure again changes nothing; the order stays cancelled (its stock went back).
    assert deliver(client, stripe_event(kind, failed))["outcome"].startswith("refund recorded")
    assert order_status(db, order["id"]) == "cancelled"


def _disputed(client: TestClient, order: Json, intent_id: str) -> dict[str, Any]:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    dispute = charge_event("charge.dispute.created", intent_id, amount=order["total_cents"])
    assert deliver(client, dispute)["outcome"] == "dispute recorded"
    return dispute  # type: ignore[no-any-return]


def _closed(dispute: dict[str, Any], status: str) -> Any:
    obj = dispute["data"]["object"]
    return charge_event(
        "charge.dispute.closed",
        obj["payment_intent"],
        id=obj["id"],
        amount=obj["amount"],
        status=status,
    )


@pytest.mark.parametrize("status", ["won", "warning_closed"])
def test_a_dispute_the_clinic_wins_lets_the_order_ship_again(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str, status: str
) -> None:
    dispute = _disputed(client, order, intent_id)

    answer = deliver(client, _closed(dispute, status))

    assert answer["outcome"] == f"dispute closed ({status}): the order can ship again"
    assert payment_of(db, intent_id).disputed is False
    (entry,) = audit_entries(db, order["id"], "payment.dispute_won")
    assert (entry.before, entry.after["disputed"], entry.after["dispute_status"]) == (
        {"disputed": True},
        False,
        status,
    )
    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    assert response.status_code == 200, response.text


def test_a_lost_dispute_is_recorded_and_the_order_stays_unshippable(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str
) -> None:
    dispute = _disputed(client, order, intent_id)

    answer = deliver(client, _closed(dispute, "lost"))

    assert answer["outcome"] == "dispute lost: recorded; the order stays unshippable"
    # The same close again under another event id (a reconciliation's repair): recorded once.
    assert deliver(client, _closed(dispute, "lost"))["outcome"] == "dispute already closed"
    assert payment_of(db, intent_id).disputed is True
    (entry,) = audit_entries(db, order["id"], "payment.dispute_lost")
    assert entry.after == {
        "disputed": True,
        "payment_intent_id": intent_id,
        "dispute_status": "lost",
        "amount_cents": order["total_cents"],
    }
    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    assert_problem(response, 409, "/problems/payment-disputed")
    assert order_status(db, order["id"]) == "paid"


def test_a_won_dispute_whose_close_arrives_first_never_blocks_the_order(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str
) -> None:
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    dispute = charge_event("charge.dispute.created", intent_id, amount=order["total_cents"])
    assert deliver(client, _closed(dispute, "won"))["outcome"].startswith("dispute closed (won)")

    assert deliver(client, dispute)["outcome"] == "dispute already closed: won"

    assert payment_of(db, intent_id).disputed is False
    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)
    assert response.status_code == 200, response.text


def test_fulfil_refuses_a_paid_order_whose_payment_was_refunded_in_full(
    client: TestClient, db: Session, admin: Headers, order: Json, intent_id: str
) -> None:
    """A row recorded before this release: refunded in full, and the order left paid."""
    deliver(client, intent_event("payment_intent.succeeded", intent_id))
    db.execute(
        update(Payment)
        .where(Payment.stripe_payment_intent_id == intent_id)
        .values(refunded_cents=Payment.amount_cents)
    )
    db.commit()

    response = client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin)

    problem = assert_problem(response, 409, "/problems/payment-refunded")
    assert "refunded" in problem["detail"]
    assert order_status(db, order["id"]) == "paid"
    assert actions(db, order["id"], "order.fulfilled") == []
    # Cancelling it releases the stock and asks Stripe for nothing more.
    response = client.post(f"{ORDERS}/{order['id']}/cancel", headers=admin)
    assert response.status_code == 200, response.text
    assert refund_messages(db) == []


def test_a_refund_at_stripe_after_shipping_keeps_the_order_fulfilled_and_flags_it(
    client: TestClient,
    db: Session,
    admin: Headers,
    doctor: Headers,
    order: Json,
    localstripe: LocalStripe,
) -> None:
    intent_id = paid_at_stripe(client, doctor, localstripe, order)
    lot_id = lot_of(order)
    assert client.post(f"{ORDERS}/{order['id']}/fulfil", headers=admin).status_code == 200
    assert lot_counters(db, lot_id) == (98, 0)
    refund_at_stripe(localstripe, intent_id)

    answer = deliver(client, stripe_event("charge.refunded", charge_of(localstripe, intent_id)))

    total = order["total_cents"]
    assert answer["outcome"] == f"refunded {total} cents in full; order already fulfilled: flagged"
    assert order_status(db, order["id"]) == "fulfilled"
    assert lot_counters(db, lot_id) == (98, 0)  # shipped units do not come back
    payment = portal_payment(client, admin, order["id"])
    assert (payment["refunded_cents"], payment["refunded_after_fulfilment"]) == (total, True)
    flagged = client.get(PAYMENTS, params={"refunded_after_fulfilment": "true"}, headers=admin)
    assert [p["id"] for p in flagged.json()["items"]] == [payment["id"]]
    (entry,) = actions(db, order["id"], "payment.refunded")
    assert entry.after == {
        "payment_intent_id": intent_id,
        "refunded_cents": total,
        "amount_cents": total,
        "order_status": "fulfilled",
        "refunded_after_fulfilment": True,
    }
    assert refund_messages(db) == []


def test_refunding_a_superseded_payment_leaves_the_paid_order_paid(
    client: TestClient,
    db: Session,
    doctor: Headers,
    order: Json,
    product: Json,
    intent_id: str,
) -> None:
    """The patient paid an old total; the portal refunds that payment; the order, paid by its
    current intent, must not be cancelled when that refund comes back."""
    response = client.patch(
        f"{ORDERS}/{order['id']}",
        json={"items": [{"product_id": product["id"], "quantity": 3}]},
        headers=doctor,
    )
    assert response.status_code == 200, response.text
    new_intent = create_intent(client, doctor, order["id"])["payment_intent_id"]
    assert deliver(client, intent_event("payment_intent.succeeded", intent_id))[
        "outcome"
    ].startswith("refund queued")
    assert deliver(client, intent_event("payment_intent.succeeded", new_intent))["outcome"] == (
        "order paid"
    )

    old_total = payment_of(db, intent_id).amount_cents
    event = charge_event(
        "charge.refunded", intent_id, amount=old_total, amount_refunded=old_total, refunded=True
    )
    assert deliver(client, event)["outcome"] == f"refunded {old_total} cents in full"

    assert order_status(db, order["id"]) == "paid"
    assert payment_of(db, intent_id).refunded_cents == old_total
    db.expire_all()
    assert db.scalar(select(func.count()).where(OutboxMessage.topic == REFUND_TOPIC)) == 1
