from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey


class PatientAccessLink(UUIDPrimaryKey, CreatedAt, Base):
    """A patient's time-limited "my orders" link, e-mailed after they gave their e-mail and
    date of birth. Only a hash of its token is stored, and no PHI: the patients it opens are
    found by keyed hashes of the e-mail and of (e-mail, date of birth)."""

    __tablename__ = "patient_access_links"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC of the normalised e-mail (as `patients.email_hash`): which patients' orders.
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    # HMAC of (e-mail, date of birth): only the patients whose date of birth was given.
    identity_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    first_used_at: Mapped[datetime | None]
