from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class RateLimitCounter(Base):
    """Requests one client made to one group of public routes in one fixed window.

    Kept in PostgreSQL so every API process counts against the same limit; rows of closed
    windows are pruned by the worker.
    """

    __tablename__ = "rate_limit_counters"

    # The group of routes that share a limit (e.g. `self-order`).
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A keyed hash of the client's address: counted, never stored in clear.
    client_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_seconds: Mapped[int] = mapped_column(primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    hits: Mapped[int]
    # When the window closes; pruning deletes by it.
    expires_at: Mapped[datetime] = mapped_column(index=True)
