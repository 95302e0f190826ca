"""Opaque (non-JWT) access tokens are bound to this API or refused.

`OIDC_OPAQUE_TOKENS` decides: `off` (production's default) refuses them without asking anyone;
`userinfo` (development's default) takes what the issuer's userinfo accepts; `introspection`
asks the issuer's RFC 7662 endpoint with the portal's client credentials and checks the token's
audience or client. Refusals are remembered for OIDC_NEGATIVE_CACHE_SECONDS.

The provider is the session's test issuer, a real HTTP server on loopback that counts every
request per path; its introspection endpoint is a stand-in for Okta's (the development provider
has none).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app import security
from app.cache import TtlCache
from app.config import Settings, get_settings
from app.errors import IdentityProviderUnavailable, NotAuthenticated
from app.security import TokenVerifier
from tests.fixtures.identity import JwtIssuer

ME = "/api/v1/users/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verifier_with(**settings: Any) -> TokenVerifier:
    return TokenVerifier(Settings(**settings))


class Asked:
    """How many requests reached the provider's endpoints since this was made."""

    def __init__(self, issuer: JwtIssuer) -> None:
        self.issuer = issuer
        self.start = dict(issuer.requests)

    def __call__(self, path: str) -> int:
        return self.issuer.requests[path] - self.start.get(path, 0)


@pytest.fixture
def use_verifier(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the app use a verifier built from the given settings."""

    def install(settings: Settings) -> TokenVerifier:
        verifier = TokenVerifier(settings)
        monkeypatch.setattr(security, "get_verifier", lambda: verifier)
        return verifier

    return install


@pytest.fixture
def production_settings() -> Iterator[Settings]:
    """The test settings as a production deployment would resolve them (validation of the
    other production settings is not the subject here)."""
    yield get_settings().model_copy(update={"environment": "production"})


# -- production: JWTs for the audience, no opaque tokens unless enabled -------------------------


def test_production_refuses_opaque_tokens_without_asking_the_provider(
    client: TestClient, jwt_issuer: JwtIssuer, production_settings: Settings, use_verifier: Any
) -> None:
    """The defect: a token that the issuer's userinfo accepts, issued to another application of
    the same tenant, was taken. In production it is refused before any request is made."""
    use_verifier(production_settings)
    foreign = jwt_issuer.opaque_token(
        "idp|other-app-user", client_id="other-app", audience="api://other", role="admin"
    )
    asked = Asked(jwt_issuer)

    response = client.get(ME, headers=bearer(foreign))

    assert response.status_code == 401, response.text
    assert response.json()["type"] == "/problems/not-authenticated"
    assert "JWT" in response.json()["detail"]
    assert asked("/userinfo") == asked("/introspect") == 0
    # A JWT access token for the configured audience is what production takes.
    jwt_token = jwt_issuer.token("idp|prod-doctor", role="doctor")
    assert client.get(ME, headers=bearer(jwt_token)).status_code == 200


def production_error(**overrides: Any) -> str:
    """The start-up error of otherwise valid production settings ('' when it starts)."""
    try:
        Settings(
            environment="production",
            oidc_client_secret="a-real-client-secret-from-the-vault",
            database_url="postgresql://portal_app@db.example/portal",
            checkout_cookie_secret="a-real-cookie-secret-of-sufficient-length-0123",
            stripe_webhook_secret="whsec_real_secret_from_the_dashboard",
            phi_encryption_keys="k1:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=",
            phi_active_key_id="k1",
            phi_hash_key="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            sms_provider="twilio",
            twilio_account_sid="AC0123",
            twilio_auth_token="token-from-twilio",
            twilio_from="+15550100",
            **overrides,
        )
    except ValidationError as exc:
        return str(exc)
    return ""


def test_production_refuses_userinfo_for_opaque_tokens() -> None:
    assert "OIDC_OPAQUE_TOKENS" in production_error(oidc_opaque_tokens="userinfo")
    assert "OIDC_OPAQUE_TOKENS" not in production_error(oidc_opaque_tokens="introspection")
    assert "OIDC_OPAQUE_TOKENS" not in production_error(oidc_opaque_tokens="off")
    assert "OIDC_OPAQUE_TOKENS" not in production_error()


def test_defaults_per_environment() -> None:
    assert Settings(environment="development").opaque_tokens == "userinfo"
    assert Settings(environment="test").opaque_tokens == "userinfo"
    production = Settings.model_construct(environment="production", oidc_opaque_tokens=None)
    assert production.opaque_tokens == "off"
    assert Settings(oidc_opaque_tokens="off").opaque_tokens == "off"


def test_off_refuses_opaque_tokens_in_development_too(jwt_issuer: JwtIssuer) -> None:
    verifier = verifier_with(oidc_opaque_tokens="off")
    token = jwt_issuer.opaque_token("idp|off", role="doctor")
    asked = Asked(jwt_issuer)
    with pytest.raises(NotAuthenticated, match="opaque"):
        verifier.verify(token)
    assert asked("/userinfo") == asked("/introspect") == 0


# -- introspection ---------------------------------------------------------------------------


def test_introspection_accepts_an_active_token_for_this_api(
    client: TestClient, jwt_issuer: JwtIssuer, use_verifier: Any
) -> None:
    use_verifier(Settings(oidc_opaque_tokens="introspection"))
    token = jwt_issuer.opaque_token(
        "idp|introspected",
        role="doctor",
        email="introspected@clinic.example.org",
        email_verified=True,
    )
    asked = Asked(jwt_issuer)

    me = client.get(ME, headers=bearer(token))

    assert me.status_code == 200, me.text
    assert me.json()["role"] == "doctor"
    assert me.json()["email"] == "introspected@clinic.example.org"
    # One authenticated introspection (the stand-in answers 401 without the client's
    # credentials), no userinfo; the answer is reused for the next request.
    assert asked("/introspect") == 1
    assert asked("/userinfo") == 0
    assert client.get(ME, headers=bearer(token)).status_code == 200
    assert asked("/introspect") == 1


def test_introspection_refuses_a_token_issued_for_another_api(
    client: TestClient, jwt_issuer: JwtIssuer, use_verifier: Any
) -> None:
    use_verifier(Settings(oidc_opaque_tokens="introspection"))
    for client_id in ("other-app", "portal-dev"):
        token = jwt_issuer.opaque_token(
            "idp|elsewhere", client_id=client_id, audience="api://other", role="admin"
        )
        response = client.get(ME, headers=bearer(token))
        assert response.status_code == 401, response.text
        assert "audience" in response.json()["detail"]


def test_without_an_audience_the_client_decides(jwt_issuer: JwtIssuer) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection")
    own = jwt_issuer.opaque_token("idp|own-client", audience=None)
    assert verifier.verify(own)["sub"] == "idp|own-client"
    foreign = jwt_issuer.opaque_token("idp|other-client", client_id="other-app", audience=None)
    with pytest.raises(NotAuthenticated, match="another application"):
        verifier.verify(foreign)

    listed = verifier_with(
        oidc_opaque_tokens="introspection", oidc_accepted_client_ids="mobile-app, other-app"
    )
    assert listed.verify(foreign)["sub"] == "idp|other-client"
    with pytest.raises(NotAuthenticated, match="another application"):
        listed.verify(jwt_issuer.opaque_token("idp/own-not-listed", audience=None))


def test_introspection_refuses_inactive_and_refresh_tokens(jwt_issuer: JwtIssuer) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection")
    for token, reason in (
        (jwt_issuer.opaque_token("idp|revoked", active=False), "not active"),
        (jwt_issuer.opaque_token("idp|expired", expires_in=-1), "not active"),
        (jwt_issuer.opaque_token("idp|refresh", token_type="refresh_token"), "refresh token"),
        ("an-unknown-token-of-plausible-shape", "not active"),
    ):
        with pytest.raises(NotAuthenticated, match=reason):
            verifier.verify(token)


def test_a_verified_answer_is_not_reused_past_the_tokens_expiry(jwt_issuer: JwtIssuer) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection", oidc_userinfo_cache_seconds=60)
    token = jwt_issuer.opaque_token("idp|short-lived", expires_in=1)
    assert verifier.verify(token)["sub"] == "idp|short-lived"
    time.sleep(1.2)
    with pytest.raises(NotAuthenticated, match="not active"):
        verifier.verify(token)


def test_wrong_client_credentials_are_a_provider_error_and_not_cached(
    client: TestClient, jwt_issuer: JwtIssuer, use_verifier: Any
) -> None:
    use_verifier(Settings(oidc_opaque_tokens="introspection", oidc_client_secret="wrong"))
    token = jwt_issuer.opaque_token("idp|misconfigured")
    asked = Asked(jwt_issuer)
    for _ in range(2):
        response = client.get(ME, headers=bearer(token))
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "/problems/identity-provider-unavailable"
        assert "client credentials" in response.json()["detail"]
    assert asked("/introspect") == 2


def test_introspection_needs_the_endpoint_in_discovery(
    jwt_issuer: JwtIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection")
    discovery = dict(verifier.discovery())
    del discovery["introspection_endpoint"]
    monkeypatch.setattr(verifier, "_discovery", discovery)
    with pytest.raises(IdentityProviderUnavailable, match="introspection_endpoint"):
        verifier.verify(jwt_issuer.opaque_token("idp|no-endpoint"))


# -- failed look-ups are remembered briefly ---------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "path"), [("introspection", "/introspect"), ("userinfo", "/userinfo")]
)
def test_a_refused_token_is_not_asked_about_again_for_a_while(
    jwt_issuer: JwtIssuer, mode: str, path: str
) -> None:
    verifier = verifier_with(oidc_opaque_tokens=mode, oidc_negative_cache_seconds=0.5)
    junk = "junk-token-0123456789abcdefghijklmnopqrstuvwxyz"
    asked = Asked(jwt_issuer)
    for _ in range(20):
        with pytest.raises(NotAuthenticated, match="not active"):
            verifier.verify(junk)
    assert asked(path) == 1
    time.sleep(0.6)
    with pytest.raises(NotAuthenticated):
        verifier.verify(junk)
    assert asked(path) == 2


def test_junk_tokens_through_the_api_reach_the_provider_once(
    client: TestClient, jwt_issuer: JwtIssuer, use_verifier: Any
) -> None:
    use_verifier(Settings(oidc_opaque_tokens="introspection"))
    asked = Asked(jwt_issuer)
    for _ in range(10):
        response = client.get(ME, headers=bearer("revoked-or-made-up-token-value"))
        assert response.status_code == 401, response.text
    assert asked("/introspect") == 1


def test_a_token_that_is_not_token_syntax_never_reaches_the_provider(
    jwt_issuer: JwtIssuer,
) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection")
    asked = Asked(jwt_issuer)
    for malformed in ("has spaces in it", 'quote"d', "ünïcode-token", "x" * 5000, "a=b"):
        with pytest.raises(NotAuthenticated, match="malformed"):
            verifier.verify(malformed)
    assert asked("/introspect") == 0


def test_refusals_kept_are_bounded_so_junk_cannot_grow_the_cache(jwt_issuer: JwtIssuer) -> None:
    verifier = verifier_with(oidc_opaque_tokens="introspection", oidc_negative_cache_seconds=60)
    verifier._refused = TtlCache(60, max_entries=3)
    for i in range(5):
        with pytest.raises(NotAuthenticated):
            verifier.verify(f"junk-number-{i}")
    assert len(verifier._refused._entries) == 3
    asked = Asked(jwt_issuer)
    with pytest.raises(NotAuthenticated):
        verifier.verify("junk-number-0")  # kept: not asked again
    with pytest.raises(NotAuthenticated):
        verifier.verify("junk-number-4")  # not kept: asked again
    assert asked("/introspect") == 1
