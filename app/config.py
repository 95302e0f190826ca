"""One settings object for the whole portal, read from the environment (and `.env`)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
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
    # Read-only role for analysts (created if missing by the migrations): the `analytics`
    # schema's marts and nothing else.
    database_analyst_role: str = "portal_analyst"
    # Data quality (pipelines/quality): the newest order may be this old before `raw_freshness`
    # fails, and the marts this far behind the portal's tables before `marts_freshness` does.
    quality_orders_max_age_hours: float = Field(default=72, gt=0)
    quality_marts_max_lag_hours: float = Field(default=26, gt=0)
    database_pool_size: int = 10

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1_048_576
    # Proxies (comma-separated addresses or networks) whose X-Forwarded-For / Forwarded headers
    # name the client. Unset: none is trusted and the client is the connection's peer.
    forwarded_allow_ips: str | None = None
    # Largest body outside /api/v1: the patient pages post one small form (date of birth).
    max_page_body_bytes: int = Field(default=8192, ge=1024, le=1_048_576)

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
    # Claim saying the token's e-mail is verified (`true`, or the string "true"). An invited
    # user's row is claimed by e-mail only when it is; otherwise the sign-in is refused (403).
    oidc_email_verified_claim: str = "email_verified"
    # Opaque (non-JWT) access tokens. `off`: refused, only JWTs for OIDC_AUDIENCE. `userinfo`:
    # any token the issuer's userinfo accepts, so also one issued to another application of the
    # same tenant (the development provider issues only these; production refuses this mode).
    # `introspection`: the issuer's RFC 7662 endpoint, with the portal's client id and secret,
    # must say `active` and name OIDC_AUDIENCE in `aud` (or, with no `aud`, a client of
    # OIDC_ACCEPTED_CLIENT_IDS). Unset: `userinfo` in development and test, `off` in production.
    oidc_opaque_tokens: Literal["off", "userinfo", "introspection"] | None = None
    # Comma-separated client ids whose opaque tokens introspection accepts when the answer
    # names no audience. Unset: only the portal's own OIDC_CLIENT_ID.
    oidc_accepted_client_ids: str | None = None
    # A verified opaque token's answer is reused for this long (never past the token's `exp`).
    oidc_userinfo_cache_seconds: int = Field(default=60, ge=0, le=600)
    # A refused opaque token is refused again without asking the issuer for this long, so a
    # client retrying a junk or revoked token does not hammer the provider.
    oidc_negative_cache_seconds: float = Field(default=15, ge=0, le=300)
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
    # An anonymous self-order's payment window: abandoned carts give their stock back soon.
    self_order_payment_ttl_minutes: int = Field(default=30, ge=5, le=24 * 60)

    # Per-client limits of the public routes, counted in PostgreSQL (shared by every API
    # process) in fixed windows of a minute and an hour; 0 turns that window's limit off.
    # Self-orders reserve stock and send e-mail; the date-of-birth check guards PHI.
    rate_limit_self_order_per_minute: int = Field(default=5, ge=0)
    rate_limit_self_order_per_hour: int = Field(default=20, ge=0)
    rate_limit_dob_check_per_minute: int = Field(default=30, ge=0)
    rate_limit_dob_check_per_hour: int = Field(default=200, ge=0)
    rate_limit_public_catalog_per_minute: int = Field(default=120, ge=0)
    rate_limit_public_catalog_per_hour: int = Field(default=3000, ge=0)
    min_remaining_shelf_life_days: int = Field(default=7, ge=0, le=3650)
    # Stock alerts (`portal alerts check`, the Dagster sweep): lots expiring within this many
    # days that still hold stock are reported to the staff who subscribe to `stock` alerts.
    stock_expiry_warning_days: int = Field(default=30, ge=0, le=3650)

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

    # Pharmacies (app/pharmacy). A submission that fails for a reason a retry may cure is
    # retried after a random delay in [0, min(MAX, BASE * 2^(attempt-1))] (full jitter), up to
    # PHARMACY_MAX_ATTEMPTS sends, then dead-lettered with an alert. A worker's claim on a
    # submission lasts PHARMACY_CLAIM_LEASE_SECONDS (longer than any pharmacy timeout): a
    # worker killed mid-send loses nothing, its submission is sent again after the lease.
    pharmacy_max_attempts: int = Field(default=8, ge=1, le=50)
    pharmacy_backoff_base_seconds: float = Field(default=5, gt=0, le=3600)
    pharmacy_backoff_max_seconds: float = Field(default=3600, gt=0, le=86400)
    pharmacy_claim_lease_seconds: float = Field(default=300, ge=5, le=3600)
    # How long a prescription sent to a pharmacy may be dispensed (dispenseRequest validity).
    pharmacy_prescription_validity_days: int = Field(default=365, ge=1, le=3650)
    # Submissions one delivery run sends at once (threads; each waits on its pharmacy).
    pharmacy_delivery_concurrency: int = Field(default=4, ge=1, le=32)
    # Submitted or accepted prescriptions are polled at most this often.
    pharmacy_poll_interval_seconds: float = Field(default=60, ge=0, le=86400)

    # The data platform (pipelines/). The lake of Parquet files the marts are exported to
    # (`<lake>/<mart>/month=YYYY-MM/`): a folder, or `s3://bucket/prefix` in production
    # (credentials from the usual AWS environment). Default: DATA_DIR/lake.
    lake_url: str | None = None
    # Port of the Dagster UI `portal up` starts on 127.0.0.1 (DAGSTER_HOME: DATA_DIR/dagster).
    dagster_port: int = Field(default=3000, ge=1, le=65535)
    # Port of the reference pharmacy (a FHIR R4 stand-in, devtools/pharmacy.py) that `portal
    # up` starts on 127.0.0.1; 0 starts none. Its dispensing delay: PHARMACY_REFERENCE_DISPENSE_
    # DELAY_SECONDS (negative: never dispenses).
    pharmacy_reference_port: int = Field(default=8700, ge=0, le=65535)
    pharmacy_reference_dispense_delay_seconds: float = Field(default=20.0, le=86400)
    # The system log (app/system_logs): records of this level and above from the API, the
    # worker and the pipelines go to the `system_log` table (redacted like every log line) for
    # admins to read; `off` keeps none. The worker deletes rows older than the retention.
    system_log_level: Literal["WARNING", "ERROR", "off"] = "WARNING"
    system_log_retention_days: int = Field(default=30, ge=1, le=3650)
    # Port of the staff portal (Streamlit, dashboards/) that `portal up` starts on 127.0.0.1;
    # 0 starts none. Its own settings (UI_*) are read by dashboards/settings.py.
    ui_port: int = Field(default=8501, ge=0, le=65535)

    @property
    def lake(self) -> str:
        return self.lake_url or str((self.data_dir / "lake").resolve())

    @property
    def anchor_dir(self) -> Path:
        return self.audit_anchor_dir or self.data_dir / "audit-anchors"

    @property
    def expected_audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @property
    def opaque_tokens(self) -> Literal["off", "userinfo", "introspection"]:
        if self.oidc_opaque_tokens is not None:
            return self.oidc_opaque_tokens
        return "off" if self.environment == "production" else "userinfo"

    @property
    def accepted_client_ids(self) -> frozenset[str]:
        if self.oidc_accepted_client_ids is None:
            return frozenset({self.oidc_client_id})
        return frozenset(c.strip() for c in self.oidc_accepted_client_ids.split(",") if c.strip())

    @field_validator("stripe_api_base", mode="before")
    @classmethod
    def _empty_means_stripe_itself(cls, value: object) -> object:
        # `STRIPE_API_BASE=` (empty) unsets the development default: Stripe's own API.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_unsafe_settings(self) -> Settings:
        problems = production_problems(self) if self.environment == "production" else []
        if self.sms_provider == "twilio" and not (
            self.twilio_account_sid and self.twilio_auth_token and self.twilio_from
        ):
            problems.append(
                "SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM"
            )
        if problems:
            raise SettingsRefused(problems, production=self.environment == "production")
        return self


class SettingsRefused(ValueError):
    """Every problem found in the settings, one per line (so an operator fixes them in one go)."""

    def __init__(self, problems: list[str], *, production: bool) -> None:
        self.problems = problems
        heading = (
            "ENVIRONMENT=production refuses these settings:"
            if production
            else "These settings are refused:"
        )
        super().__init__("\n".join([heading, *(f"- {problem}" for problem in problems)]))


def refusal_message(error: Exception) -> str | None:
    """The operator-facing text of a refused configuration, without pydantic's dump of every
    input value (which holds secrets); None when `error` is not about the settings."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError) or error.title != Settings.__name__:
        return None
    lines: list[str] = []
    for detail in error.errors():
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, SettingsRefused):
            lines.append(str(cause))
        else:
            where = ".".join(str(part) for part in detail["loc"]).upper() or "settings"
            lines.append(f"{where}: {detail['msg']}")
    return "\n".join(lines)


MIN_SECRET_LENGTH = 32
STRIPE_JS_HOST = "js.stripe.com"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return True
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _ip_address(host)
    return address is not None and (address.is_loopback or address.is_unspecified)


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, in any spelling a resolver accepts (`127.1`,
    `2130706433`, `0x7f.1`, an IPv4-mapped IPv6 address); None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_public_host(host: str | None) -> bool:
    if _is_loopback(host):
        return False
    address = _ip_address((host or "").rstrip("."))
    return address is None or address.is_global


def _public_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and _is_public_host(parts.hostname)


def _key_bytes(value: str) -> bytes | None:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _uses_development_phi_keys(s: Settings) -> tuple[bool, bool]:
    """Whether any encryption key, under any id, or the hash key is a development key's
    bytes (the strings may differ in id, order or whitespace)."""
    development = _key_bytes(DEV_PHI_KEYS.split(":", 1)[1])
    keys = [part.split(":", 1)[-1] for part in s.phi_encryption_keys.split(",") if part.strip()]
    encryption = any(_key_bytes(key) == development for key in keys)
    return encryption, _key_bytes(s.phi_hash_key) == _key_bytes(DEV_PHI_HASH_KEY)


def production_problems(s: Settings) -> list[str]:
    """Everything production refuses in `s` (README, "Production settings"), one line each."""
    problems: list[str] = []

    def need(ok: bool, problem: str) -> None:
        if not ok:
            problems.append(problem)

    need(bool(s.database_url), "DATABASE_URL must be set (not the embedded server)")
    need(
        _public_https(s.public_base_url),
        "PUBLIC_BASE_URL must be https on the public host (payment links use it)",
    )
    need(_public_https(s.oidc_issuer), "OIDC_ISSUER must be an https URL of your identity provider")
    need(bool(s.oidc_audience), "OIDC_AUDIENCE must be set explicitly to the API's audience")
    need(
        s.oidc_audience != s.oidc_client_id,
        "OIDC_AUDIENCE must differ from OIDC_CLIENT_ID (else ID tokens pass as access tokens)",
    )
    for name, value, development_value in (
        ("OIDC_CLIENT_SECRET", s.oidc_client_secret, DEV_OIDC_CLIENT_SECRET),
        ("CHECKOUT_COOKIE_SECRET", s.checkout_cookie_secret, DEV_CHECKOUT_COOKIE_SECRET),
        ("STRIPE_WEBHOOK_SECRET", s.stripe_webhook_secret, DEV_STRIPE_WEBHOOK_SECRET),
    ):
        need(value != development_value, f"{name} is the development default; set a secret")
        need(
            value == development_value or len(value) >= MIN_SECRET_LENGTH,
            f"{name} is {len(value)} characters; use at least {MIN_SECRET_LENGTH}",
        )
    need(
        s.checkout_cookie_secure,
        "CHECKOUT_COOKIE_SECURE must be true (the checkout cookie only over HTTPS)",
    )
    need(
        s.stripe_api_base is None or _public_https(s.stripe_api_base),
        "STRIPE_API_BASE must be unset (Stripe itself) or an https URL that is not loopback",
    )
    need(
        s.stripe_api_key.startswith(("sk_live_", "rk_live_")),
        "STRIPE_API_KEY must be a live key (sk_live_... or rk_live_...), not a test key",
    )
    need(
        s.stripe_publishable_key.startswith("pk_live_"),
        "STRIPE_PUBLISHABLE_KEY must be a live key (pk_live_...), not a test key",
    )
    js = urlsplit(s.stripe_js_url)
    need(
        js.scheme == "https" and js.hostname == STRIPE_JS_HOST,
        f"STRIPE_JS_URL must load Stripe.js from https://{STRIPE_JS_HOST}/v3/",
    )
    need(
        s.stripe_checkout_ui == "payment_element",
        "STRIPE_CHECKOUT_UI must be payment_element (card_element is for the local stand-in)",
    )
    development_encryption_key, development_hash_key = _uses_development_phi_keys(s)
    need(
        not development_encryption_key,
        "PHI_ENCRYPTION_KEYS is the development key; set keys from your key store",
    )
    need(
        not development_hash_key,
        "PHI_HASH_KEY is the development key; set a key from your key store",
    )
    need(
        s.smtp_starttls or _is_loopback(s.smtp_host),
        "SMTP_STARTTLS must be on for a remote SMTP_HOST",
    )
    need(
        s.sms_provider != "log",
        "SMS_PROVIDER must name a real provider (log writes messages to a local file)",
    )
    need(
        s.oidc_opaque_tokens != "userinfo",
        "OIDC_OPAQUE_TOKENS=userinfo takes tokens issued to any application of the tenant;"
        " use JWT access tokens (off) or introspection",
    )
    return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
