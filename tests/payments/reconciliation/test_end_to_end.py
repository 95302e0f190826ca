"""The issue's end-to-end proof, over real HTTP: orders paid through the API against the local
Stripe stand-in (its own signed webhooks), one cancelled and refunded through the API and the
outbox worker, one refunded at Stripe only, one whose webhook is dropped (the endpoint is
unreachable while the payment completes). Reconciliation, started through the admin API, finds
the dropped payment and the unrecorded refund and repairs both through the webhook's own path
(the order is paid with its stock held, the patient e-mailed, the audit written as by a webhook);
a second run finds nothing new and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine
from app.integrations.stripe.refunds import REFUND_TOPIC
from app.models import (
    AuditEntry,
    Lot,
    Order,
    OutboxMessage,
    Payment,
    PaymentRefund,
    ReconciliationException,
    StripeEvent,
)
from app.notifications.service import EMAIL_TOPIC, outbox_key
from app.outbox.service import deliver_due
from app.payments.flows import deliver_refund
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.orders import ORDERS
from tests.fixtures.payments import WEBHOOK
from tests.fixtures.reconciliation import next_whole_second
from tests.fixtures.stripe import LocalStripe, free_port
from tests.payments.live_server import doctor_token, live_server, seed

RUNS = "/api/v1/payments/reconciliation/runs"
EXCEPTIONS = "/api/v1/payments/reconciliation/exceptions"


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _state(session: Session) -> dict[str, Any]:
    """Everything a repair could change, to compare before and after a run."""
    session.expire_all()
    return {
        "orders": sorted(session.execute(select(Order.id, Order.status))),
        "payments": sorted(
            session.execute(
                select(
                    Payment.stripe_payment_intent_id,
                    Payment.status,
                    Payment.refunded_cents,
                    Payment.disputed,
                )
            )
        ),
        "refunds": sorted(session.scalars(select(PaymentRefund.stripe_refund_id))),
        "lots": sorted(
            session.execute(select(Lot.id, Lot.quantity_on_hand, Lot.quantity_reserved))
        ),
        "inbox": sorted(session.scalars(select(StripeEvent.id))),
        "outbox": sorted(session.scalars(select(OutboxMessage.dedupe_key))),
        "exceptions": sorted(
            session.execute(
                select(
                    ReconciliationException.id,
                    ReconciliationException.repaired_at,
                    ReconciliationException.resolved_at,
                )
            )
        ),
        "audit": session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action != "payment.reconciled")
        ),
    }


def test_a_dropped_webhook_is_found_and_repaired_and_a_second_run_changes_nothing(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, localstripe: LocalStripe, tmp_path: Path
) -> None:
    seeded = seed(fresh_db, units=20)
    doctor = {"Authorization": f"Bearer {doctor_token(jwt_issuer)}"}
    admin_token = jwt_issuer.token("recon-admin", role="admin", email="recon-admin@clinic.example")
    admin = {"Authorization": f"Bearer {admin_token}"}
    body = {
        "patient_id": str(seeded.patient_id),
        "items": [{"product_id": str(seeded.product_id), "quantity": 2}],
    }
    engine = make_engine(fresh_db.owner_url, pool_size=2)
    sessions = sessionmaker(engine, expire_on_commit=False)
    start = next_whole_second()

    with (
        live_server(fresh_db, jwt_issuer, localstripe, tmp_path / "uvicorn.log") as base,
        httpx.Client(base_url=base, headers=doctor, timeout=30) as api,
        httpx.Client(base_url=base, headers=admin, timeout=60) as staff,
    ):

        def place_and_intend() -> tuple[str, str]:
            response = api.post(ORDERS, json=body)
            assert response.status_code == 201, response.text
            order_id = response.json()["id"]
            response = api.post("/api/v1/payments/create-intent", json={"order_id": order_id})
            assert response.status_code == 200, response.text
            return order_id, response.json()["payment_intent_id"]

        def status_of(order_id: str) -> str:
            response = api.get(f"{ORDERS}/{order_id}")
            assert response.status_code == 200, response.text
            return str(response.json()["status"])

        localstripe.register_webhook(base + WEBHOOK)
        try:
            # Paid through its own webhook, then 5.00 refunded in the Stripe Dashboard (the
            # stand-in, like a missed delivery, sends no refund event).
            kept, kept_intent = place_and_intend()
            localstripe.pay_by_card(kept_intent)
            _wait_for(lambda: status_of(kept) == "paid", f"order {kept} paid")
            dashboard_refund = localstripe.post(
                "/v1/refunds", {"payment_intent": kept_intent, "amount": "500"}
            )

            # Paid, then cancelled by staff: refunded through the outbox worker.
            cancelled, cancelled_intent = place_and_intend()
            localstripe.pay_by_card(cancelled_intent)
            _wait_for(lambda: status_of(cancelled) == "paid", f"order {cancelled} paid")
            response = staff.post(
                f"{ORDERS}/{cancelled}/cancel", json={"reason": "patient_request"}
            )
            assert response.status_code == 200, response.text
            delivered = deliver_due(sessions, {REFUND_TOPIC: deliver_refund})
            assert delivered.delivered == 1, delivered
            assert len(localstripe.refunds(cancelled_intent)) == 1

            # The webhook endpoint is unreachable while this one is paid: its event is lost.
            localstripe.register_webhook(f"http://127.0.0.1:{free_port()}/gone")
            dropped, dropped_intent = place_and_intend()
            localstripe.pay_by_card(dropped_intent)  # sent a second later, to nowhere
            assert status_of(dropped) == "pending"
            with sessions() as session:
                lot_before = session.execute(
                    select(Lot.quantity_on_hand, Lot.quantity_reserved)
                ).one()

            end = time.time() + 1
            period = {
                "start": start.isoformat(),
                "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
            }
            first = staff.post(RUNS, json=period)
            assert first.status_code == 201, first.text
            report = first.json()
            assert report["intents_examined"] == 3
            assert report["counts"] == {"missed_payment": 1, "missed_refund": 1}
            assert (report["exceptions_new"], report["repaired"]) == (2, 2)
            assert report["disputes_listed"] is False
            assert status_of(dropped) == "paid"
            assert status_of(kept) == "paid"
            assert status_of(cancelled) == "cancelled"

            listed = staff.get(EXCEPTIONS, params={"state": "repaired"})
            assert listed.status_code == 200, listed.text
            assert {(e["kind"], e["stripe_object_id"]) for e in listed.json()["items"]} == {
                ("missed_payment", dropped_intent),
                ("missed_refund", dashboard_refund["id"]),
            }
            open_now = staff.get(EXCEPTIONS, params={"state": "open"}).json()["items"]
            assert open_now == []

            with sessions() as session:
                before = _state(session)
            second = staff.post(RUNS, json=period)
            assert second.status_code == 201, second.text
            assert second.json()["counts"] == {}
            assert (second.json()["exceptions_new"], second.json()["repaired"]) == (0, 0)
            with sessions() as session:
                assert _state(session) == before
        finally:
            # Later tests' Stripe activity must not be sent to this (stopped) server's port.
            localstripe.register_webhook(f"http://127.0.0.1:{free_port()}/gone")

    try:
        with sessions() as session:
            dropped_payment = session.scalar(
                select(Payment).where(Payment.stripe_payment_intent_id == dropped_intent)
            )
            assert dropped_payment is not None and dropped_payment.status == "succeeded"
            # The same flow as a webhook: the order paid by the webhook's actor, the patient
            # e-mailed once, the stock still reserved for it (shipped later, not released).
            paid_by = session.scalars(
                select(AuditEntry.actor_subject).where(
                    AuditEntry.entity_id == dropped, AuditEntry.action == "order.paid"
                )
            ).all()
            assert paid_by == ["system:stripe-webhook"]
            emails = session.scalars(
                select(OutboxMessage.dedupe_key).where(
                    OutboxMessage.dedupe_key
                    == outbox_key(EMAIL_TOPIC, f"payment-received-{dropped}")
                )
            ).all()
            assert len(emails) == 1
            assert (
                session.execute(select(Lot.quantity_on_hand, Lot.quantity_reserved)).one()
                == lot_before
            )
            kept_payment = session.scalar(
                select(Payment).where(Payment.stripe_payment_intent_id == kept_intent)
            )
            assert kept_payment is not None and kept_payment.refunded_cents == 500
            assert session.get(PaymentRefund, dashboard_refund["id"]) is not None
            # The run was audited with the admin as its actor; each repair too.
            repaired_by = session.scalars(
                select(AuditEntry.actor_subject).where(
                    AuditEntry.action == "payment.reconciliation_repaired"
                )
            ).all()
            assert repaired_by == ["recon-admin", "recon-admin"]
            runs = session.scalars(
                select(AuditEntry.actor_subject).where(AuditEntry.action == "payment.reconciled")
            ).all()
            assert runs == ["recon-admin", "recon-admin"]
    finally:
        engine.dispose()
