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
