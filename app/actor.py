"""Who is acting, and from where: carried into every service call that writes the audit log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    DOCTOR = "doctor"
    SYSTEM = "system"  # the CLI, pipelines and workers


@dataclass(frozen=True, slots=True)
class Actor:
    subject: str
    role: Role
    user_id: uuid.UUID | None = None
    email: str | None = None
    request_id: str | None = None
    client_address: str | None = None

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(subject=f"system:{name}", role=Role.SYSTEM)

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.SYSTEM)
