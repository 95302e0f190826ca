from __future__ import annotations

from sqlalchemy import CheckConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import StaffRole, one_of


class User(UUIDPrimaryKey, CreatedAt, Base):
    """A member of staff. Identity is the OIDC subject; the role is managed here by admins."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(one_of("role", StaffRole), name="role"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    # Null when the identity provider shares no e-mail (e.g. Auth0 access tokens).
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # Null until the person first signs in (an admin may invite by e-mail beforehand).
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
