from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.models.status import LogLevel, LogSource


class SystemLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    level: LogLevel
    source: LogSource
    logger: str
    message: str
    exception: str | None
