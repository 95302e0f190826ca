from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.db import DbSession
from app.errors import (
    Conflict,
    DuplicateValue,
    InsufficientStock,
    InvalidStateTransition,
    problem_responses,
)
from app.inventory import service
from app.inventory.schemas import (
    LotOut,
    LotReceive,
    LotStatusChange,
    LowStockItem,
    StockAdjustment,
    StockMovementOut,
)
from app.models import Lot
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor, StaffActor

router = APIRouter(tags=["inventory"])


def _lot_out(lot: Lot) -> LotOut:
    return LotOut.model_validate(
        {**lot.__dict__, "quantity_available": lot.quantity_on_hand - lot.quantity_reserved}
    )


@router.post(
    "/products/{product_id}/lots",
    response_model=LotOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(Conflict, DuplicateValue),
)
def receive_lot(
    product_id: uuid.UUID, data: LotReceive, actor: AdminActor, session: DbSession
) -> LotOut:
    """Receive a lot into stock (a `receipt` movement in the ledger)."""
    return _lot_out(service.receive_lot(session, actor, product_id, data))


@router.get("/products/{product_id}/lots", response_model=Page[LotOut])
def list_lots(
    product_id: uuid.UUID,
    actor: StaffActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[LotOut]:
    return service.list_lots(session, product_id, limit=limit, cursor=cursor).map(_lot_out).page()


@router.get("/lots/{lot_id}", response_model=LotOut)
def get_lot(lot_id: uuid.UUID, actor: StaffActor, session: DbSession) -> LotOut:
    return _lot_out(service.get_lot(session, lot_id))


@router.post(
    "/lots/{lot_id}/status",
    response_model=LotOut,
    responses=problem_responses(InvalidStateTransition),
)
def change_lot_status(
    lot_id: uuid.UUID, data: LotStatusChange, actor: AdminActor, session: DbSession
) -> LotOut:
    """Quarantine, release, recall or expire a lot. Recalled and expired are final."""
    return _lot_out(service.change_status(session, actor, lot_id, data))


@router.post(
    "/lots/{lot_id}/adjustments",
    response_model=StockMovementOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(InsufficientStock, InvalidStateTransition),
)
def adjust_stock(
    lot_id: uuid.UUID, data: StockAdjustment, actor: AdminActor, session: DbSession
) -> StockMovementOut:
    """Correct a lot's on-hand quantity; answers with the ledger row written."""
    _, movement = service.adjust_stock(session, actor, lot_id, data)
    return StockMovementOut.model_validate(movement)


@router.get("/lots/{lot_id}/movements", response_model=Page[StockMovementOut])
def list_movements(
    lot_id: uuid.UUID,
    actor: AdminActor,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[StockMovementOut]:
    """The lot's ledger, in the order it was written."""
    movements = service.list_movements(session, lot_id, limit=limit, cursor=cursor)
    return movements.map(StockMovementOut.model_validate).page()


@router.get("/inventory/low-stock", response_model=Page[LowStockItem])
def low_stock(
    actor: AdminActor,
    session: DbSession,
    expiring_within_days: Annotated[int, Query(ge=0, le=3650)] = 30,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[LowStockItem]:
    """Active products whose sellable quantity is at or below par, with a suggested order."""
    items = service.low_stock(
        session, expiring_within_days=expiring_within_days, limit=limit, cursor=cursor
    )
    return items.page()
