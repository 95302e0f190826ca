from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey

PHI_FIELDS = ("name", "email", "phone", "date_of_birth")


class Patient(UUIDPrimaryKey, CreatedAt, Base):
    """A patient: PHI lives here, and only here, encrypted (see app.phi)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("doctor_id", "email_hash"),)

    # The doctor who owns this patient; null for patients who ordered for themselves.
    doctor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    name_encrypted: Mapped[str] = mapped_column(Text)
    email_encrypted: Mapped[str] = mapped_column(Text)
    phone_encrypted: Mapped[str] = mapped_column(Text)
    date_of_birth_encrypted: Mapped[str] = mapped_column(Text)
    # HMAC of the normalised e-mail: look-up without decrypting.
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
