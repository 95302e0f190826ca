"""Receiving lots, the lot status machine, stock adjustments and the stock ledger."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actor import Actor
from app.audit.service import seal, verify_chain
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.db import make_engine
from app.errors import InsufficientStock
from app.inventory import service as inventory
from app.inventory.repository import ledger_totals, lots_disagreeing_with_ledger, today
from app.inventory.schemas import LotReceive, StockAdjustment
from app.models import AuditEntry, Lot, StockMovement
from tests.fixtures.catalog import (
    PRODUCTS,
    audit_entries,
    create_product,
    insert_lot,
    receive_lot,
    reserve,
    row_counts,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.problems import assert_problem

Headers = dict[str, str]
Json = dict[str, Any]
LOTS = "/api/v1/lots"


def movements_of(db: Session, lot_id: str | uuid.UUID) -> list[StockMovement]:
    return list(
        db.scalars(select(StockMovement).where(StockMovement.lot_id == uuid.UUID(str(lot_id))))
    )


def get_lot(client: TestClient, headers: Headers, lot_id: str) -> Json:
    response = client.get(f"{LOTS}/{lot_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def adjust(client: TestClient, headers: Headers, lot_id: str, **body: Any) -> Any:
    return client.post(f"{LOTS}/{lot_id}/adjustments", json=body, headers=headers)


def set_status(client: TestClient, headers: Headers, lot_id: str, status: str) -> Any:
    return client.post(
        f"{LOTS}/{lot_id}/status",
        json={"status": status, "reason": f"test: {status}"},
        headers=headers,
    )


# -- receiving -------------------------------------------------------------------------------------


def test_receiving_a_lot_puts_its_quantity_on_hand_and_writes_a_receipt_movement(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    expires = today() + timedelta(days=180)
    response = client.post(
        f"{PRODUCTS}/{product['id']}/lots",
        json={"lot_number": "A123/45", "quantity": 40, "expiration_date": expires.isoformat()},
        headers=admin,
    )

    assert response.status_code == 201, response.text
    lot = response.json()
    assert lot["product_id"] == product["id"]
    assert lot["lot_number"] == "A123/45"
    assert lot["expiration_date"] == expires.isoformat()
    assert lot["quantity_on_hand"] == 40
    assert lot["quantity_reserved"] == 0
    assert lot["quantity_available"] == 40
    assert lot["status"] == "available"
    assert get_lot(client, admin, lot["id"]) == lot
    (movement,) = movements_of(db, lot["id"])
    assert movement.reason == "receipt"
    assert movement.delta_on_hand == 40
    assert movement.delta_reserved == 0
    assert movement.actor_subject == "admin-main"
    (entry,) = audit_entries(db, lot["id"])
    assert entry.action == "lot.received"
    assert entry.actor_subject == "admin-main"
    assert entry.after is not None
    assert entry.after["quantity_on_hand"] == 40
    assert entry.after["lot_number"] == "A123/45"
    assert client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()[
        "quantity_available"
    ] == (40)


def test_perishable_lot_without_expiration_date_is_409_and_not_received(
    client: TestClient, db: Session, admin: Headers, perishable_product: Json
) -> None:
    before = row_counts(db)

    response = client.post(
        f"{PRODUCTS}/{perishable_product['id']}/lots",
        json={"lot_number": "NODATE", "quantity": 5},
        headers=admin,
    )

    # The product's state decides, not the request's shape: 409, naming the field.
    body = assert_problem(response, 409, "/problems/conflict")
    assert body["field"] == "expiration_date"
    assert row_counts(db) == before


@pytest.mark.parametrize("days_from_today", [0, -1, -365])
@pytest.mark.parametrize("perishable", [True, False])
def test_lot_expiring_today_or_earlier_is_422_and_not_received(
    client: TestClient, db: Session, admin: Headers, days_from_today: int, perishable: bool
) -> None:
    product = create_product(client, admin, perishable=perishable)
    before = row_counts(db)
    expires = today() + timedelta(days=days_from_today)

    response = client.post(
        f"{PRODUCTS}/{product['id']}/lots",
        json={"lot_number": "OLD-1", "quantity": 5, "expiration_date": expires.isoformat()},
        headers=admin,
    )

    body = assert_problem(response, 422, "/problems/validation-error")
    assert [error["field"] for error in body["errors"]] == ["expiration_date"]
    assert row_counts(db) == before


def test_lot_expiring_tomorrow_is_received(
    client: TestClient, admin: Headers, perishable_product: Json
) -> None:
    tomorrow = today() + timedelta(days=1)

    lot = receive_lot(client, admin, perishable_product["id"], quantity=2, expiration_date=tomorrow)

    assert lot["expiration_date"] == tomorrow.isoformat()


def test_duplicate_lot_number_for_the_same_product_is_409(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    first = receive_lot(client, admin, product["id"], lot_number="LOT-7", quantity=5)
    before = row_counts(db)

    response = client.post(
        f"{PRODUCTS}/{product['id']}/lots",
        json={"lot_number": "LOT-7", "quantity": 9},
        headers=admin,
    )

    body = assert_problem(response, 409, "/problems/duplicate")
    assert body["field"] == "lot_number"
    assert row_counts(db) == before
    assert get_lot(client, admin, first["id"])["quantity_on_hand"] == 5


def test_same_lot_number_on_another_product_is_accepted(
    client: TestClient, admin: Headers, product: Json
) -> None:
    other = create_product(client, admin)
    receive_lot(client, admin, product["id"], lot_number="SHARED-1")

    lot = receive_lot(client, admin, other["id"], lot_number="SHARED-1")

    assert lot["product_id"] == other["id"]


# -- listing ---------------------------------------------------------------------------------------


def test_listing_lots_shows_each_lot_of_the_product_with_quantity_available(
    client: TestClient, db: Session, admin: Headers, doctor: Headers, product: Json
) -> None:
    plain = receive_lot(client, admin, product["id"], quantity=10)
    reserved = receive_lot(client, admin, product["id"], quantity=8)
    reserve(db, reserved["id"], 3)
    other_product = create_product(client, admin)
    receive_lot(client, admin, other_product["id"], quantity=99)

    response = client.get(f"{PRODUCTS}/{product['id']}/lots", headers=doctor)

    assert response.status_code == 200, response.text
    page = response.json()
    by_id = {lot["id"]: lot for lot in page["items"]}
    assert set(by_id) == {plain["id"], reserved["id"]}
    assert by_id[plain["id"]]["quantity_available"] == 10
    assert by_id[reserved["id"]]["quantity_reserved"] == 3
    assert by_id[reserved["id"]]["quantity_available"] == 5
    assert page["next_cursor"] is None


def test_lot_pagination_returns_every_lot_exactly_once(
    client: TestClient, admin: Headers, product: Json
) -> None:
    received = {receive_lot(client, admin, product["id"])["id"] for _ in range(5)}

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{PRODUCTS}/{product['id']}/lots", params=params, headers=admin).json()
        seen.extend(lot["id"] for lot in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(received)


def test_listing_lots_of_an_unknown_product_is_404(client: TestClient, admin: Headers) -> None:
    response = client.get(f"{PRODUCTS}/{uuid.uuid4()}/lots", headers=admin)

    assert_problem(response, 404, "/problems/not-found")


# -- status machine --------------------------------------------------------------------------------


def test_lot_can_be_quarantined_and_released_and_each_change_is_audited(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=6)

    held = client.post(
        f"{LOTS}/{lot['id']}/status",
        json={"status": "quarantined", "reason": "temperature excursion"},
        headers=admin,
    )
    available_while_held = client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()[
        "quantity_available"
    ]
    released = client.post(
        f"{LOTS}/{lot['id']}/status",
        json={"status": "available", "reason": "QA cleared"},
        headers=admin,
    )

    assert held.status_code == 200, held.text
    assert held.json()["status"] == "quarantined"
    assert held.json()["status_reason"] == "temperature excursion"
    assert available_while_held == 0
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "available"
    assert released.json()["status_reason"] == "QA cleared"
    assert client.get(f"{PRODUCTS}/{product['id']}", headers=admin).json()[
        "quantity_available"
    ] == (6)
    changes = [e for e in audit_entries(db, lot["id"]) if e.action == "lot.status_changed"]
    assert [(c.before["status"], c.after["status"]) for c in changes if c.before and c.after] == [
        ("available", "quarantined"),
        ("quarantined", "available"),
    ]
    assert changes[0].after is not None
    assert changes[0].after["reason"] == "temperature excursion"
    assert all(c.actor_subject == "admin-main" for c in changes)


@pytest.mark.parametrize("final", ["recalled", "expired"])
@pytest.mark.parametrize("target", ["available", "quarantined", "recalled", "expired"])
def test_recalled_and_expired_lots_are_final(
    client: TestClient, db: Session, admin: Headers, product: Json, final: str, target: str
) -> None:
    lot = receive_lot(client, admin, product["id"])
    assert set_status(client, admin, lot["id"], final).status_code == 200
    before = row_counts(db)

    response = set_status(client, admin, lot["id"], target)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == final
    assert body["allowed"] == []
    assert get_lot(client, admin, lot["id"])["status"] == final
    assert row_counts(db) == before


@pytest.mark.parametrize("status", ["available", "quarantined"])
def test_changing_a_lot_to_the_status_it_already_has_is_409(
    client: TestClient, admin: Headers, product: Json, status: str
) -> None:
    lot = receive_lot(client, admin, product["id"])
    if status != "available":
        assert set_status(client, admin, lot["id"], status).status_code == 200

    response = set_status(client, admin, lot["id"], status)

    body = assert_problem(response, 409, "/problems/invalid-state-transition")
    assert body["current_status"] == status


def test_quarantined_lot_past_its_expiry_cannot_be_released(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = insert_lot(
        db,
        product["id"],
        quantity=5,
        status="quarantined",
        expiration_date=today() - timedelta(days=1),
    )

    response = set_status(client, admin, str(lot.id), "available")

    assert_problem(response, 409, "/problems/invalid-state-transition")
    assert get_lot(client, admin, str(lot.id))["status"] == "quarantined"


def test_doctor_may_not_change_lot_status_or_adjust_stock(
    client: TestClient, admin: Headers, doctor: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=5)

    status = set_status(client, doctor, lot["id"], "quarantined")
    adjustment = adjust(client, doctor, lot["id"], delta=-1, reason="damaged")
    movements = client.get(f"{LOTS}/{lot['id']}/movements", headers=doctor)

    for response in (status, adjustment, movements):
        assert_problem(response, 403, "/problems/forbidden")
    after = get_lot(client, admin, lot["id"])
    assert (after["status"], after["quantity_on_hand"]) == ("available", 5)


# -- adjustments -----------------------------------------------------------------------------------


def test_negative_damaged_adjustment_lowers_on_hand_and_writes_movement_and_audit(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=20)

    response = adjust(client, admin, lot["id"], delta=-3, reason="damaged", note="dropped box")

    assert response.status_code == 201, response.text
    movement = response.json()
    assert movement["lot_id"] == lot["id"]
    assert movement["delta_on_hand"] == -3
    assert movement["delta_reserved"] == 0
    assert movement["reason"] == "adjustment"
    assert movement["reason_code"] == "damaged"
    assert movement["note"] == "dropped box"
    assert movement["actor_subject"] == "admin-main"
    assert get_lot(client, admin, lot["id"])["quantity_on_hand"] == 17
    stored = db.get(StockMovement, uuid.UUID(movement["id"]))
    assert stored is not None and stored.delta_on_hand == -3
    adjusted = audit_entries(db, lot["id"])[-1]
    assert adjusted.action == "lot.adjusted"
    assert adjusted.actor_subject == "admin-main"
    assert adjusted.before == {"quantity_on_hand": 20}
    assert adjusted.after == {"quantity_on_hand": 17, "delta": -3, "reason": "damaged"}


@pytest.mark.parametrize(
    ("delta", "reason", "note"),
    [
        (5, "count_correction", None),
        (-5, "count_correction", None),
        (4, "returned", None),
        (-2, "expired", None),
        (-1, "other", "sample for QA"),
        (1, "other", "found behind the shelf"),
    ],
)
def test_adjustment_in_the_direction_its_reason_allows_is_applied(
    client: TestClient, admin: Headers, product: Json, delta: int, reason: str, note: str | None
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=10)

    response = adjust(client, admin, lot["id"], delta=delta, reason=reason, note=note)

    assert response.status_code == 201, response.text
    assert response.json()["reason_code"] == reason
    assert get_lot(client, admin, lot["id"])["quantity_on_hand"] == 10 + delta


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"delta": 3, "reason": "damaged"}, "must be negative"),
        ({"delta": 3, "reason": "expired"}, "must be negative"),
        ({"delta": -3, "reason": "returned"}, "must be positive"),
        ({"delta": -1, "reason": "other"}, "note is required"),
        ({"delta": 0, "reason": "count_correction"}, "must not be zero"),
        ({"delta": -1, "reason": "stolen"}, "reason"),
    ],
    ids=[
        "positive-damaged",
        "positive-expired",
        "negative-returned",
        "other-without-note",
        "zero",
        "unknown-reason",
    ],
)
def test_adjustment_that_contradicts_its_reason_is_422_and_changes_nothing(
    client: TestClient, db: Session, admin: Headers, product: Json, body: Json, message: str
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=10)
    before = row_counts(db)

    response = adjust(client, admin, lot["id"], **body)

    problem = assert_problem(response, 422, "/problems/validation-error")
    assert message in problem["detail"]
    assert get_lot(client, admin, lot["id"])["quantity_on_hand"] == 10
    assert row_counts(db) == before


def test_adjustment_below_zero_is_409_insufficient_stock_with_the_numbers(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=5)
    before = row_counts(db)

    response = adjust(client, admin, lot["id"], delta=-6, reason="damaged")

    body = assert_problem(response, 409, "/problems/insufficient-stock")
    assert body["quantity_on_hand"] == 5
    assert body["quantity_reserved"] == 0
    assert body["quantity_free"] == 5
    assert get_lot(client, admin, lot["id"])["quantity_on_hand"] == 5
    assert row_counts(db) == before


def test_adjustment_may_not_take_on_hand_below_what_is_reserved(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=10)
    reserve(db, lot["id"], 4)

    refused = adjust(client, admin, lot["id"], delta=-7, reason="damaged")
    allowed = adjust(client, admin, lot["id"], delta=-6, reason="damaged")

    body = assert_problem(refused, 409, "/problems/insufficient-stock")
    assert (body["quantity_on_hand"], body["quantity_reserved"], body["quantity_free"]) == (
        10,
        4,
        6,
    )
    assert allowed.status_code == 201, allowed.text
    after = get_lot(client, admin, lot["id"])
    assert (after["quantity_on_hand"], after["quantity_reserved"]) == (4, 4)
    assert after["quantity_available"] == 0


def test_adjustment_of_an_unknown_lot_is_404(client: TestClient, admin: Headers) -> None:
    response = adjust(client, admin, str(uuid.uuid4()), delta=-1, reason="damaged")

    assert_problem(response, 404, "/problems/not-found")


# -- the ledger ------------------------------------------------------------------------------------


def test_movements_endpoint_lists_the_lots_ledger(
    client: TestClient, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=30)
    other = receive_lot(client, admin, product["id"], quantity=1)
    adjust(client, admin, lot["id"], delta=-2, reason="damaged")
    adjust(client, admin, lot["id"], delta=5, reason="returned")
    adjust(client, admin, other["id"], delta=-1, reason="damaged")

    response = client.get(f"{LOTS}/{lot['id']}/movements", headers=admin)

    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    assert {m["lot_id"] for m in page["items"]} == {lot["id"]}
    # All rows of this test share one transaction, hence one created_at: compare as a multiset.
    assert Counter((m["reason"], m["reason_code"], m["delta_on_hand"]) for m in page["items"]) == (
        Counter(
            [("receipt", None, 30), ("adjustment", "damaged", -2), ("adjustment", "returned", 5)]
        )
    )


def test_movement_pagination_returns_every_movement_exactly_once(
    client: TestClient, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=50)
    for _ in range(4):
        assert adjust(client, admin, lot["id"], delta=-1, reason="damaged").status_code == 201

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{LOTS}/{lot['id']}/movements", params=params, headers=admin).json()
        seen.extend(m["id"] for m in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)) == 5


def test_lot_counters_equal_the_sum_of_its_movements_after_a_series_of_adjustments(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    lot = receive_lot(client, admin, product["id"], quantity=50)
    reserve(db, lot["id"], 5)
    series = [
        {"delta": -3, "reason": "damaged"},
        {"delta": 7, "reason": "returned"},
        {"delta": -10, "reason": "count_correction"},
        {"delta": -100, "reason": "damaged"},  # refused: leaves no trace
        {"delta": 2, "reason": "other", "note": "recount"},
        {"delta": -1, "reason": "expired"},
    ]
    for body in series:
        adjust(client, admin, lot["id"], **body)

    current = get_lot(client, admin, lot["id"])
    db.expire_all()

    assert current["quantity_on_hand"] == 50 - 3 + 7 - 10 + 2 - 1
    assert ledger_totals(db, uuid.UUID(lot["id"])) == (
        current["quantity_on_hand"],
        current["quantity_reserved"],
    )
    assert lots_disagreeing_with_ledger(db) == []
    assert len(movements_of(db, lot["id"])) == 1 + 1 + 5


def test_ledger_check_detects_a_lot_whose_counters_drifted(
    client: TestClient, db: Session, admin: Headers, product: Json
) -> None:
    """The ledger assertions above only mean something if a mismatch would be reported."""
    lot = receive_lot(client, admin, product["id"], quantity=5)
    stored = db.get(Lot, uuid.UUID(lot["id"]))
    assert stored is not None
    stored.quantity_on_hand = 6  # changed without a movement
    db.flush()

    assert lots_disagreeing_with_ledger(db) == [stored.id]


# -- concurrency -----------------------------------------------------------------------------------

THREADS = 8
ADJUSTMENTS_PER_THREAD = 25
STARTING_QUANTITY = 100


def test_concurrent_adjustments_never_drive_a_lot_below_zero(fresh_db: TestDatabase) -> None:
    engine = make_engine(fresh_db.app_url, pool_size=THREADS)
    actor = Actor.system("test")
    try:
        with Session(engine) as session:
            product = catalog.create_product(
                session,
                actor,
                ProductCreate(sku="CONC-1", name="Saline 0.9% 10 ml", price_cents=150),
            )
            lot = inventory.receive_lot(
                session,
                actor,
                product.id,
                LotReceive(lot_number="CONC-LOT", quantity=STARTING_QUANTITY),
            )
            session.commit()
            lot_id = lot.id

        start = threading.Barrier(THREADS, timeout=60)

        def worker() -> list[int | None]:
            """On-hand after each successful adjustment; None for each refused one."""
            outcomes: list[int | None] = []
            start.wait()
            for _ in range(ADJUSTMENTS_PER_THREAD):
                with Session(engine) as session:
                    try:
                        updated, _ = inventory.adjust_stock(
                            session, actor, lot_id, StockAdjustment(delta=-1, reason="damaged")
                        )
                        on_hand = updated.quantity_on_hand
                        session.commit()
                    except InsufficientStock:
                        session.rollback()
                        outcomes.append(None)
                    else:
                        outcomes.append(on_hand)
            return outcomes

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(worker) for _ in range(THREADS)]
            outcomes = [o for future in futures for o in future.result(timeout=240)]

        succeeded = [o for o in outcomes if o is not None]
        assert len(outcomes) == THREADS * ADJUSTMENTS_PER_THREAD
        assert len(succeeded) == STARTING_QUANTITY
        # Every success saw a different resulting count, 99 down to 0: they were serialised.
        assert sorted(succeeded) == list(range(STARTING_QUANTITY))
        assert min(succeeded) >= 0

        with Session(engine) as session:
            final = session.get(Lot, lot_id)
            assert final is not None
            assert (final.quantity_on_hand, final.quantity_reserved) == (0, 0)
            assert ledger_totals(session, lot_id) == (0, 0)
            assert lots_disagreeing_with_ledger(session) == []
            adjustments = session.scalar(
                select(func.count())
                .select_from(StockMovement)
                .where(StockMovement.lot_id == lot_id, StockMovement.reason == "adjustment")
            )
            assert adjustments == STARTING_QUANTITY
            audited = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "lot.adjusted", AuditEntry.entity_id == str(lot_id))
            )
            assert audited == STARTING_QUANTITY
            assert seal(session) == STARTING_QUANTITY + 2
            chain = verify_chain(session)
            assert chain.ok, chain.first_break
            assert chain.rows_checked == STARTING_QUANTITY + 2  # + product.created, lot.received
    finally:
        engine.dispose()
