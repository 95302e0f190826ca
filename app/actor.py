"""Who is acting, and from where: carried into every service call that writes the audit log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from app.models.status import StaffRole


class Role(StrEnum):
    """The actor's role, recorded in every audit row it writes (`audit_log.actor_role`)."""

    ADMIN = StaffRole.ADMIN.value
    DOCTOR = StaffRole.DOCTOR.value
    SYSTEM = "system"  # the CLI, pipelines and workers
    CHECKOUT_LINK = "checkout-link"  # a patient, through their payment link (app/checkout)


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
        """A member of staff with the admin role; never one of the portal's own actors."""
        return self.role == Role.ADMIN

    @property
    def sees_all_patients(self) -> bool:
        """Whether every patient, and so every order, is visible to this actor.

        A doctor sees their own patients only. Admins see all; so do the portal's processes,
        which act for every doctor, and a checkout link, which its payer dependency confines to
        the one order it names (app/checkout/payer.py), not this rule.
        """
        return self.role in (Role.ADMIN, Role.SYSTEM, Role.CHECKOUT_LINK)
