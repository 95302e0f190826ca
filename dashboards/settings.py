"""The staff portal's settings, from the environment (and `.env`), like the API's.

The OIDC sign-in itself is configured in Streamlit's secrets (`[auth]`, see the README's
"Staff portal" section); `portal up` writes that file for development.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # The portal's API (every write and every operational read goes there, as the user).
    ui_api_url: str = "http://127.0.0.1:8000"
    ui_api_timeout_seconds: float = Field(default=15, gt=0, le=120)
    # The marts, as the read-only analyst role (DATABASE_ANALYST_ROLE): `analytics.*` only.
    # `portal up` derives it; unset, the analytics pages say so instead of showing numbers.
    ui_analytics_database_url: str | None = None
    # The Dagster webserver whose GraphQL API the Overview asks for pipeline health (last runs,
    # failed checks); unset: the Overview says it is not configured.
    ui_dagster_url: str | None = "http://127.0.0.1:3000"
    # Dates and days are shown in the clinic's time zone (an IANA name).
    clinic_time_zone: str = "America/New_York"
    # Sign-in limits: a session ends after this long without a click, and this long after
    # sign-in whatever happens (Streamlit's own login cookie lasts 30 days).
    ui_idle_minutes: float = Field(default=30, gt=0, le=24 * 60)
    ui_absolute_hours: float = Field(default=12, gt=0, le=7 * 24)
    # How long a mart query's answer is reused (st.cache_data).
    ui_cache_seconds: int = Field(default=60, ge=0, le=3600)

    @field_validator("clinic_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/Chicago)") from exc
        return value

    @model_validator(mode="after")
    def _production_needs_https(self) -> UiSettings:
        if self.environment == "production":
            parts = urlsplit(self.ui_api_url)
            if parts.scheme != "https" or parts.hostname in LOOPBACK:
                raise ValueError("UI_API_URL must be the API's https URL in production")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.clinic_time_zone)

    @property
    def idle_seconds(self) -> float:
        return self.ui_idle_minutes * 60

    @property
    def absolute_seconds(self) -> float:
        return self.ui_absolute_hours * 3600


@lru_cache
def get_ui_settings() -> UiSettings:
    return UiSettings()


# The development identity provider's client secret (app/config.py's DEV_OIDC_CLIENT_SECRET;
# the UI keeps its own copy rather than import the API's settings).
DEV_CLIENT_SECRET = "portal-dev-secret"  # noqa: S105 - a public development default
MIN_COOKIE_SECRET_LENGTH = 32


def auth_problems(auth: dict[str, object], environment: str) -> list[str]:
    """What production refuses in Streamlit's `[auth]` secrets, one line each."""
    if environment != "production":
        return []
    problems: list[str] = []
    secret = str(auth.get("client_secret", ""))
    if not secret or secret == DEV_CLIENT_SECRET:
        problems.append("[auth] client_secret is missing or the development default")
    if len(str(auth.get("cookie_secret", ""))) < MIN_COOKIE_SECRET_LENGTH:
        problems.append(
            f"[auth] cookie_secret must be at least {MIN_COOKIE_SECRET_LENGTH} random characters"
        )
    for key in ("redirect_uri", "server_metadata_url"):
        parts = urlsplit(str(auth.get(key, "")))
        if parts.scheme != "https" or parts.hostname in LOOPBACK:
            problems.append(f"[auth] {key} must be an https URL that is not loopback")
    exposed = auth.get("expose_tokens")
    if not (exposed == "access" or (isinstance(exposed, list) and "access" in exposed)):
        problems.append('[auth] expose_tokens must include "access" (the API needs it)')
    return problems
