"""No oversell under real concurrency: 200 one-unit orders race for 50 units over HTTP.

A real server with two worker processes (`portal serve --workers 2`: two connection pools, no
shared Python state) serves the API on a committed copy of the database; 200 orders from one
doctor arrive at once from 50 threads. Exactly 50 may win and the rest must get a clean 409; the
lot counters must agree with the stock ledger; and the winners must have drained the lots
first-expiry-first-out.

It also guards against a worker hanging under this load: requests waiting on the lots' row
locks hold threadpool threads while the lock holder still needs one to commit, so they must
never be allowed to occupy every thread (`app.db.DbSession`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.service import seal, verify_chain
from app.catalog.schemas import ProductCreate
from app.db import make_engine
from app.inventory.repository import lots_disagreeing_with_ledger, today
from app.models import Lot, LotAllocation, Order, OrderItem, StockMovement
from app.patients.schemas import PatientCreate
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import live_api
from tests.fixtures.stock import seed_stock

DOCTOR_SUBJECT = "race-doctor"
DOCTOR_EMAIL = "race-doctor@clinic.example"
REQUESTS = 200
THREADS = 50
# (lot number, expires in days, units): received out of expiry order on purpose, so FEFO has
# to follow the dates rather than the order the lots were created in.
LOTS = [("RACE-B60", 60, 15), ("RACE-A30", 30, 10), ("RACE-C90", 90, 25)]
STOCK = sum(units for _, _, units in LOTS)

Outcome = tuple[int, dict[str, Any]]


def _fire(base: str, token: str, body: dict[str, Any]) -> list[Outcome]:
    """REQUESTS orders from THREADS clients released together by a barrier."""
    start = threading.Barrier(THREADS, timeout=30)
    per_thread = REQUESTS // THREADS

    def worker() -> list[Outcome]:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=20) as client:
            client.get("/healthz")  # connect before the start line
            start.wait()
            outcomes: list[Outcome] = []
            for _ in range(per_thread):
                try:
                    response = client.post("/api/v1/orders", json=body)
                except httpx.HTTPError as exc:  # a hung server: count it, don't wait again
                    outcomes.extend([(0, {"error": repr(exc)})] * (per_thread - len(outcomes)))
                    break
                try:
                    payload = response.json()
                except ValueError:
                    payload = {"raw": response.text}
                outcomes.append((response.status_code, payload))
            return outcomes

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker) for _ in range(THREADS)]
        return [outcome for future in futures for outcome in future.result(timeout=60)]


def test_concurrent_orders_never_oversell_and_take_lots_first_expiry_first_out(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, tmp_path: Path
) -> None:
    stocked = seed_stock(
        fresh_db,
        doctor_subject=DOCTOR_SUBJECT,
        doctor_email=DOCTOR_EMAIL,
        patient=PatientCreate(
            name="Rae Condition",
            email="rae.condition@example.com",
            phone="+1 555 0100",
            date_of_birth=date(1970, 1, 1),
        ),
        product=ProductCreate(
            sku="RACE-INSULIN", name="Insulin pen", price_cents=2500, perishable=True
        ),
        lots=LOTS,
    )
    token = jwt_issuer.token(DOCTOR_SUBJECT, role="doctor", email=DOCTOR_EMAIL, expires_in=600)
    body = {
        "patient_id": str(stocked.patient_id),
        "items": [{"product_id": str(stocked.product_id), "quantity": 1}],
    }
    log_path = tmp_path / "api.log"
    settings = {
        "DATABASE_URL": fresh_db.app_url,
        "OIDC_ISSUER": jwt_issuer.url,
        "OIDC_AUDIENCE": AUDIENCE,
    }

    with live_api(settings, log_path, workers=2) as base:
        started = time.monotonic()
        outcomes = _fire(base, token, body)
        elapsed = time.monotonic() - started

    statuses = Counter(status for status, _ in outcomes)
    assert len(outcomes) == REQUESTS
    assert statuses == {201: STOCK, 409: REQUESTS - STOCK}, (
        f"{statuses} in {elapsed:.1f}s; server log:\n{log_path.read_text()[-5000:]}"
    )
    refused = [payload for status, payload in outcomes if status == 409]
    assert {p["type"] for p in refused} == {"/problems/insufficient-stock"}
    # No false refusal: a request is turned away only once every unit is promised.
    assert all(p["requested"] == 1 and p["available"] == 0 for p in refused)
    created = [payload for status, payload in outcomes if status == 201]
    created_ids = {uuid.UUID(p["id"]) for p in created}
    assert len(created_ids) == STOCK
    for order in created:
        assert order["status"] == "pending"
        (item,) = order["items"]
        assert [a["quantity"] for a in item["allocations"]] == [1]

    engine = make_engine(fresh_db.owner_url, pool_size=1)
    try:
        with Session(engine) as session:
            lots = list(session.scalars(select(Lot).where(Lot.product_id == stocked.product_id)))
            units_of = {number: units for number, _, units in LOTS}
            assert sum(lot.quantity_reserved for lot in lots) == STOCK
            for lot in lots:
                assert 0 <= lot.quantity_reserved <= lot.quantity_on_hand
                assert lot.quantity_on_hand == units_of[lot.lot_number]  # nothing shipped
            assert lots_disagreeing_with_ledger(session) == []

            # The 150 refusals left nothing behind: only the winners' orders and allocations.
            orders = set(session.scalars(select(Order.id)))
            assert orders == created_ids
            assert session.scalar(select(func.count()).select_from(OrderItem)) == STOCK
            allocated = session.execute(
                select(OrderItem.order_id, func.sum(LotAllocation.quantity))
                .join(LotAllocation, LotAllocation.order_item_id == OrderItem.id)
                .group_by(OrderItem.order_id)
            ).all()
            assert {order_id: int(units) for order_id, units in allocated} == dict.fromkeys(
                created_ids, 1
            )

            reservations = list(
                session.scalars(
                    select(StockMovement)
                    .where(StockMovement.reason == "reservation")
                    .order_by(StockMovement.seq)
                )
            )
            assert {m.order_id for m in reservations} == created_ids
            assert all(m.delta_reserved == 1 and m.delta_on_hand == 0 for m in reservations)
            # FEFO across the race: in insertion order (taken under the lots' row locks, so the
            # order the orders were serialised in), each reservation's lot expires no earlier
            # than the previous one's: the 30-day lot is drained, then the 60, then the 90.
            dates = [stocked.lot_expiry[m.lot_id] for m in reservations]
            expected = [
                today() + timedelta(days=d)
                for _, d, u in sorted(LOTS, key=lambda x: x[1])
                for _ in range(u)
            ]
            assert dates == expected
            assert set(session.scalars(select(StockMovement.reason))) == {
                "receipt",
                "reservation",
            }
            seal(session)
            chain = verify_chain(session)
            assert chain.ok, chain.first_break
            # Each winner wrote its order and its payment link to the audit log.
            assert chain.rows_checked >= 2 * STOCK
            session.commit()
    finally:
        engine.dispose()
