from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int | None = Field(description="Place in the hash chain; null until sealed")
    occurred_at: datetime
    actor_subject: str
    actor_role: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    client_address: str | None
    row_hash: str | None


class ChainStatus(BaseModel):
    ok: bool
    rows_checked: int
    head_hash: str
    first_bad_seq: int | None
    problem: str | None
    unsealed_rows: int = Field(description="Rows committed since the seal (in flight)")
    sealing_overdue: bool = Field(description="Some row has waited minutes: is the worker up?")


class PhiReadsOut(BaseModel):
    """One reader's PHI reads over the period asked for (the access review)."""

    model_config = ConfigDict(from_attributes=True)

    actor_subject: str
    actor_role: str = Field(description="admin, doctor, system or checkout-link (a patient)")
    reads: int = Field(description="Every PHI read: patients, orders, lists, pharmacy records")
    patients_read: int = Field(description="Distinct patients whose details were read")
    orders_read: int
    lists_read: int = Field(description="Order lists read (each names the orders it showed)")
    pharmacy_records_read: int = Field(description="Prescription submissions and their logs")
    first_at: datetime
    last_at: datetime


class PhiReadReview(BaseModel):
    occurred_from: datetime
    occurred_to: datetime
    readers: list[PhiReadsOut] = Field(description="Most reads first")
