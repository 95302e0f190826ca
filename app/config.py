"""One settings object for the whole portal, read from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# Values that only make sense on a developer's machine; production refuses to start with them.
DEV_OIDC_CLIENT_SECRET = "portal-dev-secret"  # noqa: S105 - a public development default
DEV_CHECKOUT_COOKIE_SECRET = "portal-development-cookie-secret"  # noqa: S105
DEV_STRIPE_WEBHOOK_SECRET = "whsec_portal_development_only"  # noqa: S105 - development default
# 32-byte development keys (base64). Synthetic data only; production refuses them.
DEV_PHI_KEYS = "dev1:ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcmVhbC1waGk="
DEV_PHI_HASH_KEY = "ZGV2ZWxvcG1lbnQtbG9vay11cC1oYXNoLWtleS0wMDA="


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = "development"
    data_dir: Path = Path(".portal")
    # Where audit anchors (the chain's head, written outside the database) are kept: in
    # production a write-once location (e.g. a bucket with object lock, mounted or synced).
    # Default: DATA_DIR/audit-anchors. The worker writes one every AUDIT_ANCHOR_EVERY_SECONDS.
    audit_anchor_dir: Path | None = None
    audit_anchor_every_seconds: float = Field(default=3600, ge=0)

    # The application's own role (INSERT/SELECT only on the audit log). Unset in development:
    # `portal up` starts an embedded server and derives both URLs.
    database_url: str | None = None
    # The schema owner, used for migrations and seeding. Defaults to DATABASE_URL.
    database_migration_url: str | None = None
    # Name of the restricted role the migrations grant to (created if missing).
    database_app_role: str = "portal_app"
    database_pool_size: int = 10

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1_048_576

    oidc_issuer: str = "http://127.0.0.1:9400"
    oidc_client_id: str = "portal-dev"
    oidc_client_secret: str = DEV_OIDC_CLIENT_SECRET
    # Expected `aud` of JWT access tokens (Okta: the authorization server's audience; Auth0:
    # the API identifier). Defaults to the client id.
    oidc_audience: str | None = None
    # Client Swagger UI at /docs signs in with (authorization code + PKCE, no secret): in
    # production a public (SPA) client whose redirect URI is <API origin>/docs/oauth2-redirect.
    oidc_docs_client_id: str | None = None
    # Claim that carries the role (`admin` or `doctor`); when absent the `users` table decides.
    oidc_role_claim: str = "role"
    # Opaque tokens are checked at userinfo; a verified answer is reused for this long.
    oidc_userinfo_cache_seconds: int = Field(default=60, ge=0, le=600)
    oidc_jwks_cache_seconds: int = Field(default=3600, ge=0)
    # How long each API process reuses a signed-in user's row (role, active) between requests.
    # A change made through this process applies at once; one made elsewhere (another worker,
    # SQL) within this many seconds. 0 reads the row on every request.
    signed_in_user_cache_seconds: float = Field(default=5, ge=0, le=60)
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # New users seen with a valid role claim are created on first request.
    auto_provision_users: bool = True

    # PHI field encryption: `id:base64key,...` (AES-256); new values use the active key.
    phi_encryption_keys: str = DEV_PHI_KEYS
    phi_active_key_id: str = "dev1"
    # HMAC key for look-up hashes (e-mail); rotating it needs a re-hash of every patient.
    phi_hash_key: str = DEV_PHI_HASH_KEY

    # Stripe. Development talks to the local stand-in (localstripe) started by `portal up`.
    stripe_api_key: str = "sk_test_portal_development"
    stripe_api_base: str | None = "http://127.0.0.1:8420"  # unset in production
    stripe_publishable_key: str = "pk_test_portal_development"
    stripe_webhook_secret: str = DEV_STRIPE_WEBHOOK_SECRET
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    stripe_js_url: str = "http://127.0.0.1:8420/js.stripe.com/v3/"
    # The checkout page uses Stripe's Payment Element (card and ACH). The local stand-in lacks
    # it, so development runs the page on the Card Element: `card_element`.
    stripe_checkout_ui: Literal["payment_element", "card_element"] = "payment_element"

    # Patient checkout links and the cookie they are exchanged for.
    checkout_cookie_secret: str = DEV_CHECKOUT_COOKIE_SECRET
    checkout_cookie_minutes: int = Field(default=30, ge=5, le=24 * 60)
    checkout_max_failed_attempts: int = Field(default=5, ge=1, le=20)
    # Secure cookies need HTTPS; development serves plain HTTP on loopback.
    checkout_cookie_secure: bool = True

    # Orders: how long a patient has to pay, and how much shelf life a lot must still have.
    order_payment_ttl_hours: int = Field(default=72, ge=1, le=24 * 30)
    min_remaining_shelf_life_days: int = Field(default=7, ge=0, le=3650)

    # Notifications. E-mail over SMTP; development delivers to the local sink (`portal up`
    # starts it when SMTP_HOST is loopback), production to SES or any SMTP relay.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = "Portal <no-reply@portal.localhost>"
    # SMS: `log` appends to DATA_DIR/sms.log (development), `twilio` sends through Twilio.
    sms_provider: Literal["log", "twilio"] = "log"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    # A phone number (E.164) or a Messaging Service SID (MG...).
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"

    @property
    def anchor_dir(self) -> Path:
        return self.audit_anchor_dir or self.data_dir / "audit-anchors"

    @property
    def expected_audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            if self.oidc_client_secret == DEV_OIDC_CLIENT_SECRET:
                raise ValueError("OIDC_CLIENT_SECRET must be set in production")
            if not self.database_url:
                raise ValueError("DATABASE_URL must be set in production")
            if self.checkout_cookie_secret == DEV_CHECKOUT_COOKIE_SECRET:
                raise ValueError("CHECKOUT_COOKIE_SECRET must be set in production")
            if self.stripe_webhook_secret == DEV_STRIPE_WEBHOOK_SECRET:
                raise ValueError("STRIPE_WEBHOOK_SECRET must be set in production")
            if self.phi_encryption_keys == DEV_PHI_KEYS or self.phi_hash_key == DEV_PHI_HASH_KEY:
                raise ValueError("PHI_ENCRYPTION_KEYS and PHI_HASH_KEY must be set in production")
            if not self.smtp_starttls and self.smtp_host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("SMTP_STARTTLS must be on for a remote SMTP_HOST in production")
            if self.sms_provider == "log":
                raise ValueError("SMS_PROVIDER must name a real provider in production")
        if self.sms_provider == "twilio" and not (
            self.twilio_account_sid and self.twilio_auth_token and self.twilio_from
        ):
            raise ValueError(
                "SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
