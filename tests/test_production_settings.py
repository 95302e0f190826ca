"""`ENVIRONMENT=production` refuses development settings, naming every problem at once."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import DEV_CHECKOUT_COOKIE_SECRET, DEV_OIDC_CLIENT_SECRET, Settings
from tests.fixtures.live_api import PORTAL, PRIVATE_PREFIXES, PROJECT_ROOT, free_port
from tests.fixtures.settings import production_settings


def test_a_production_set_up_with_real_services_is_accepted() -> None:
    settings = Settings(**production_settings())
    assert settings.environment == "production"


# Each row: one bad value, and the setting the refusal must name.
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("stripe_api_base", "http://127.0.0.1:8420", "STRIPE_API_BASE"),
    ("stripe_api_base", "https://localhost:8420", "STRIPE_API_BASE"),
    ("stripe_api_base", "http://api.stripe.com", "STRIPE_API_BASE"),
    ("stripe_js_url", "http://127.0.0.1:8420/js.stripe.com/v3/", "STRIPE_JS_URL"),
    ("stripe_js_url", "https://cdn.example.com/stripe/v3/", "STRIPE_JS_URL"),
    ("stripe_api_key", "sk_test_" + "a" * 24, "STRIPE_API_KEY"),
    ("stripe_api_key", "rk_test_" + "a" * 24, "STRIPE_API_KEY"),
    ("stripe_publishable_key", "pk_test_" + "b" * 24, "STRIPE_PUBLISHABLE_KEY"),
    ("stripe_checkout_ui", "card_element", "STRIPE_CHECKOUT_UI"),
    ("oidc_issuer", "http://idp.clinic.example", "OIDC_ISSUER"),
    ("oidc_issuer", "https://127.0.0.1:9400", "OIDC_ISSUER"),
    ("oidc_audience", None, "OIDC_AUDIENCE"),
    ("oidc_audience", "0oa-portal", "OIDC_AUDIENCE"),  # the client id: ID tokens would pass
    ("checkout_cookie_secure", False, "CHECKOUT_COOKIE_SECURE"),
    ("public_base_url", "http://portal.clinic.example", "PUBLIC_BASE_URL"),
    ("public_base_url", "https://127.0.0.1:8000", "PUBLIC_BASE_URL"),
    ("checkout_cookie_secret", DEV_CHECKOUT_COOKIE_SECRET, "CHECKOUT_COOKIE_SECRET"),
    ("checkout_cookie_secret", "c" * 31, "CHECKOUT_COOKIE_SECRET"),
    ("oidc_client_secret", DEV_OIDC_CLIENT_SECRET, "OIDC_CLIENT_SECRET"),
    ("oidc_client_secret", "o" * 31, "OIDC_CLIENT_SECRET"),
    ("stripe_webhook_secret", "whsec_portal_development_only", "STRIPE_WEBHOOK_SECRET"),
    ("stripe_webhook_secret", "whsec_short", "STRIPE_WEBHOOK_SECRET"),
    # Long enough, but one character repeated (or hardly more): a stand-in, not a secret.
    ("oidc_client_secret", "a" * 32, "OIDC_CLIENT_SECRET"),
    ("checkout_cookie_secret", "ab" * 32, "CHECKOUT_COOKIE_SECRET"),
    ("stripe_webhook_secret", "whsec_" + "a" * 32, "STRIPE_WEBHOOK_SECRET"),
    ("database_url", None, "DATABASE_URL"),
    ("phi_hash_key", "ZGV2ZWxvcG1lbnQtbG9vay11cC1oYXNoLWtleS0wMDA=", "PHI_HASH_KEY"),
    (
        "phi_encryption_keys",
        "dev1:ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcmVhbC1waGk=",
        "PHI_ENCRYPTION_KEYS",
    ),
    ("smtp_starttls", False, "SMTP_STARTTLS"),
    ("sms_provider", "log", "SMS_PROVIDER"),
    # Spellings of loopback, private and metadata addresses are not public hosts.
    ("stripe_api_base", "https://127.1", "STRIPE_API_BASE"),
    ("stripe_api_base", "https://2130706433", "STRIPE_API_BASE"),
    ("oidc_issuer", "https://localhost.", "OIDC_ISSUER"),
    ("oidc_issuer", "https://[::ffff:127.0.0.1]", "OIDC_ISSUER"),
    ("public_base_url", "https://169.254.169.254", "PUBLIC_BASE_URL"),
    ("public_base_url", "https://10.0.0.5", "PUBLIC_BASE_URL"),
    # The development keys under another id, beside a real key, or with trailing whitespace.
    (
        "phi_encryption_keys",
        "k1:"
        + base64.b64encode(b"k" * 32).decode()
        + ",old:ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcmVhbC1waGk=",
        "PHI_ENCRYPTION_KEYS",
    ),
    ("phi_hash_key", "ZGV2ZWxvcG1lbnQtbG9vay11cC1oYXNoLWtleS0wMDA=\n", "PHI_HASH_KEY"),
]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    BAD_VALUES,
    ids=[f"{field}={value!r}" for field, value, _ in BAD_VALUES],
)
def test_production_refuses_each_development_setting(field: str, value: Any, named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**production_settings(**{field: value}))
    message = str(refused.value)
    assert named in message
    # Only that setting is named: the message lists problems, not the whole configuration.
    assert message.count("\n- ") == 1, message


def test_production_lists_every_problem_in_one_message() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(
            **production_settings(
                stripe_api_base="http://127.0.0.1:8420",
                stripe_api_key="sk_test_x",
                oidc_issuer="http://127.0.0.1:9400",
                oidc_audience=None,
                checkout_cookie_secure=False,
                public_base_url="http://127.0.0.1:8000",
            )
        )
    message = str(refused.value)
    named = [
        "STRIPE_API_BASE",
        "STRIPE_API_KEY",
        "OIDC_ISSUER",
        "OIDC_AUDIENCE",
        "CHECKOUT_COOKIE_SECURE",
        "PUBLIC_BASE_URL",
    ]
    lines = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(lines) == len(named), message
    for setting in named:
        assert [line for line in lines if line.startswith(f"- {setting} ")], (setting, message)


def test_development_keeps_its_local_defaults() -> None:
    settings = Settings(_env_file=None, environment="development")
    assert settings.stripe_api_base == "http://127.0.0.1:8420"


@pytest.mark.parametrize("command", [["serve", "--workers", "1"], ["worker", "--once"], ["up"]])
def test_portal_refuses_to_start_in_production_with_development_settings(
    tmp_path: Path, command: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    env.update(
        ENVIRONMENT="production",
        DATA_DIR=str(tmp_path),
        API_PORT=str(free_port()),
        STRIPE_API_KEY="sk_test_portal",
        OIDC_ISSUER="http://127.0.0.1:9400",
        COLUMNS="200",
    )
    finished = subprocess.run(
        [PORTAL, *command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode != 0
    assert "ENVIRONMENT=production" in output
    for setting in ("DATABASE_URL", "STRIPE_API_KEY", "OIDC_ISSUER", "STRIPE_API_BASE"):
        assert setting in output, output
    assert "Traceback" not in output and "pydantic" not in output, output
    assert "╭" not in output, output  # no rich traceback box either


def test_an_empty_stripe_api_base_means_stripe_itself() -> None:
    """The README says to unset STRIPE_API_BASE in production; an empty value does that."""
    settings = Settings(**production_settings(stripe_api_base=""))
    assert settings.stripe_api_base is None
