"""Opaque access tokens from the real development identity provider (oidc-provider-mock).

The provider runs as a subprocess; tokens come from its authorization-code flow
(`devtools.identity.obtain_dev_token`) and the API verifies them at the provider's userinfo.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.errors import NotAuthenticated
from app.security import TokenVerifier, get_verifier
from devtools.devstack import identity_provider_argv
from devtools.identity import DEMO_USERS, obtain_dev_token, sign_in_as
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.live_api import identity_provider

ME = "/api/v1/users/me"
CLIENT_ID = "portal-dev"


@pytest.fixture(scope="module")
def dev_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = Path(sys.executable).parent / "oidc-provider-mock"
    with identity_provider(
        lambda port: [str(binary), "--port", str(port)], tmp_path_factory.mktemp("oidc")
    ) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def demo_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The provider started exactly as `make run` starts it, with the demo users."""
    with identity_provider(identity_provider_argv, tmp_path_factory.mktemp("oidc-demo")) as issuer:
        yield issuer


def sign_in(issuer: str, role: str, email: str) -> str:
    """An opaque access token for `email` (the provider's subject) with that role claim."""
    body = obtain_dev_token(issuer, role=role, email=email)
    token = body["access_token"]
    assert token.count(".") != 2, "expected an opaque access token, not a JWT"
    return token


def revoke(issuer: str, sub: str) -> None:
    httpx.post(f"{issuer}/users/{sub}/revoke-tokens", timeout=5).raise_for_status()


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@clinic.example.org"


@pytest.fixture
def userinfo_cache_seconds() -> int:
    return 60


@pytest.fixture
def dev_env(dev_issuer: str, userinfo_cache_seconds: int) -> Iterator[str]:
    """Point the app's settings and verifier at the development provider for one test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OIDC_ISSUER", dev_issuer)
        mp.setenv("OIDC_AUDIENCE", CLIENT_ID)
        mp.setenv("OIDC_USERINFO_CACHE_SECONDS", str(userinfo_cache_seconds))
        get_settings.cache_clear()
        get_verifier.cache_clear()
        try:
            assert get_settings().oidc_issuer == dev_issuer
            yield dev_issuer
        finally:
            get_settings.cache_clear()
            get_verifier.cache_clear()
    # The environment is restored here; the next get_settings() reads the test issuer again.


@pytest.fixture
def app(dev_env: str, db: Session) -> Any:
    """Overrides conftest's `app`: built after the settings point at the dev provider."""
    from app.db import get_session
    from app.main import create_app

    application = create_app()

    def session_override() -> Iterator[Session]:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    application.dependency_overrides[get_session] = session_override
    return application


def test_opaque_token_from_the_real_login_flow_is_accepted(
    client: TestClient, dev_issuer: str
) -> None:
    email = unique_email("dev-doctor")
    token = sign_in(dev_issuer, "doctor", email)
    response = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == "doctor"
    assert body["email"] == email
    assert body["signed_in"] is True
    # The role from userinfo is enforced like a JWT's.
    admin_only = client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert admin_only.status_code == 403, admin_only.text


def test_admin_from_the_dev_provider(client: TestClient, dev_issuer: str) -> None:
    token = sign_in(dev_issuer, "admin", unique_email("dev-admin"))
    response = client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("dev_env")
def test_garbage_opaque_token_is_refused(client: TestClient) -> None:
    for garbage in ("garbage", uuid.uuid4().hex, "x" * 5000):
        response = client.get(ME, headers={"Authorization": f"Bearer {garbage}"})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("userinfo_cache_seconds", [0])
def test_revoked_token_stops_working(client: TestClient, dev_issuer: str) -> None:
    email = unique_email("dev-revoked")
    token = sign_in(dev_issuer, "doctor", email)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(ME, headers=headers).status_code == 200
    revoke(dev_issuer, email)
    response = client.get(ME, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_revocation_takes_effect_when_the_userinfo_cache_expires(dev_issuer: str) -> None:
    settings = Settings(
        oidc_issuer=dev_issuer, oidc_audience=CLIENT_ID, oidc_userinfo_cache_seconds=1
    )
    verifier = TokenVerifier(settings)
    email = unique_email("dev-cached")
    token = sign_in(dev_issuer, "doctor", email)
    assert verifier.verify(token)["email"] == email
    revoke(dev_issuer, email)
    # Within the cache window the verified answer is reused ...
    assert verifier.verify(token)["sub"] == email
    time.sleep(1.2)
    # ... and once it expires the issuer is asked again and says no.
    with pytest.raises(NotAuthenticated):
        verifier.verify(token)


def test_two_emails_are_two_users(client: TestClient, dev_issuer: str) -> None:
    first_email, second_email = unique_email("dev-one"), unique_email("dev-two")
    first = client.get(
        ME, headers={"Authorization": f"Bearer {sign_in(dev_issuer, 'doctor', first_email)}"}
    )
    second = client.get(
        ME, headers={"Authorization": f"Bearer {sign_in(dev_issuer, 'doctor', second_email)}"}
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]
    assert {first.json()["email"], second.json()["email"]} == {first_email, second_email}
    # Signing in again as the first person maps to the same account.
    again = client.get(
        ME, headers={"Authorization": f"Bearer {sign_in(dev_issuer, 'doctor', first_email)}"}
    )
    assert again.json()["id"] == first.json()["id"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_dev_token_claims_an_invitation_because_its_email_is_verified(
    client: TestClient, dev_issuer: str
) -> None:
    """`make run` keeps working with invitations: the provider's users carry a verified e-mail
    (`portal dev-token` sets it), so the invited role applies, not the token's."""
    admin = bearer(sign_in(dev_issuer, "admin", unique_email("dev-inviter")))
    email = unique_email("dev-boss")
    invited = client.post("/api/v1/users", json={"email": email, "role": "admin"}, headers=admin)
    assert invited.status_code == 201, invited.text

    me = client.get(ME, headers=bearer(sign_in(dev_issuer, "doctor", email)))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == invited.json()["id"]
    assert me.json()["role"] == "admin"


def test_a_dev_token_with_an_unverified_email_cannot_claim_an_invitation(
    client: TestClient, dev_issuer: str
) -> None:
    """The reproduction of the takeover against the development provider itself."""
    admin = bearer(sign_in(dev_issuer, "admin", unique_email("dev-inviter")))
    email = unique_email("dev-boss")
    invited = client.post("/api/v1/users", json={"email": email, "role": "admin"}, headers=admin)
    assert invited.status_code == 201, invited.text
    token = obtain_dev_token(dev_issuer, role="doctor", email=email, email_verified=False)
    response = client.get(ME, headers=bearer(token["access_token"]))
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "/problems/email-not-verified"


def test_the_demo_users_of_make_run_carry_a_verified_email(demo_issuer: str) -> None:
    """Signing in as a demo user at the provider `make run` starts (no claims set by us):
    userinfo says the e-mail is verified."""
    for role, person in DEMO_USERS.items():
        token = sign_in_as(demo_issuer, person["email"])["access_token"]
        claims = httpx.get(f"{demo_issuer}/userinfo", headers=bearer(token), timeout=5).json()
        assert claims["email"] == person["email"]
        assert claims["email_verified"] is True
        assert claims["role"] == role


def test_settings_are_restored_after_the_dev_provider_tests(jwt_issuer: JwtIssuer) -> None:
    """Guards `dev_env`: the tests after this module must see the session's JWT issuer again."""
    assert os.environ["OIDC_ISSUER"] == jwt_issuer.url
    assert get_settings().oidc_issuer == jwt_issuer.url
    assert get_verifier().issuer == jwt_issuer.url.rstrip("/")
