from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

RoleName = Literal["admin", "doctor"]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str | None
    role: RoleName
    full_name: str | None
    active: bool
    signed_in: bool = Field(description="Whether the person has signed in through OIDC yet")
    created_at: datetime


class UserInvite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    role: RoleName
    full_name: str | None = Field(default=None, min_length=1, max_length=200)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName | None = None
    active: bool | None = None
    full_name: str | None = Field(default=None, min_length=1, max_length=200)
