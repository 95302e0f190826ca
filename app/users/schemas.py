from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models.status import StaffRole
from app.schemas import EmailAddress, StrictInput


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str | None
    role: StaffRole
    full_name: str | None
    active: bool
    signed_in: bool = Field(description="Whether the person has signed in through OIDC yet")
    created_at: datetime


class UserInvite(StrictInput):
    email: EmailAddress
    role: StaffRole
    full_name: str | None = Field(default=None, min_length=1, max_length=200)


class UserUpdate(StrictInput):
    role: StaffRole | None = None
    active: bool | None = Field(default=None, strict=True)
    full_name: str | None = Field(default=None, min_length=1, max_length=200)
