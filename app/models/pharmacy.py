from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, UUIDPrimaryKey
from app.models.status import PharmacyAuthKind, one_of


class Pharmacy(UUIDPrimaryKey, CreatedAt, Base):
    """A pharmacy the portal sends prescriptions to, through a connector chosen by name.

    The API key and the OAuth2 client secret are encrypted like PHI (app.phi) and never leave
    the portal in clear except towards the pharmacy; the certificate and key settings of mutual
    TLS are paths to files on the delivering host. At most one pharmacy is the default (a
    partial unique index); products may name another (`products.pharmacy_id`).
    """

    __tablename__ = "pharmacies"
    __table_args__ = (
        CheckConstraint(one_of("auth_kind", PharmacyAuthKind), name="auth_kind"),
        CheckConstraint("timeout_seconds > 0 AND timeout_seconds <= 120", name="timeout_in_range"),
        Index(
            "uq_pharmacies_is_default",
            "is_default",
            unique=True,
            postgresql_where=text("is_default"),
        ),
    )

    name: Mapped[str] = mapped_column(String(100), unique=True)
    connector: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(500))
    auth_kind: Mapped[str] = mapped_column(String(16), server_default=PharmacyAuthKind.NONE.value)
    auth_header: Mapped[str | None] = mapped_column(String(100))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    token_url: Mapped[str | None] = mapped_column(String(500))
    client_id: Mapped[str | None] = mapped_column(String(200))
    client_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(String(200))
    cert_file: Mapped[str | None] = mapped_column(String(500))
    key_file: Mapped[str | None] = mapped_column(String(500))
    ca_file: Mapped[str | None] = mapped_column(String(500))
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    timeout_seconds: Mapped[float] = mapped_column(server_default=text("10"))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    is_default: Mapped[bool] = mapped_column(server_default=text("false"))
    updated_at: Mapped[datetime | None]
