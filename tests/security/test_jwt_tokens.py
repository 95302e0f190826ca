"""JWT access tokens (the Okta / Auth0 path) against a real issuer with discovery and JWKS.

Every refusal is checked through the API (`GET /api/v1/users/me`), so a change in the verifier,
the dependency or the error rendering shows up here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app import security
from app.cache import TtlCache
from app.config import get_settings
from app.errors import NotAuthenticated
from app.models import User
from app.security import TokenVerifier
from tests.fixtures.identity import AUDIENCE, JwtIssuer

ME = "/api/v1/users/me"
Auth = Callable[..., dict[str, str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthenticated(response: Any, *, error: str | None = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 401
    assert body["type"] == "/problems/not-authenticated"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    if error:
        assert f'error="{error}"' in challenge


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_token(header: dict[str, Any], payload: dict[str, Any], signer: Any = None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = signer(signing_input.encode()) if signer else b""
    return f"{signing_input}.{b64url(signature)}"


def valid_payload(issuer: JwtIssuer, sub: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub,
        "iss": issuer.url,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "role": "admin",
        "email": f"{sub}@clinic.example.org",
    }


@pytest.fixture
def restore_signing_key(jwt_issuer: JwtIssuer) -> Iterator[None]:
    """Rotation changes the session-wide issuer's current key; put it back for other tests."""
    original = jwt_issuer.current_kid
    yield
    jwt_issuer.current_kid = original


# -- accepted ---------------------------------------------------------------------------------


def test_valid_jwt_is_accepted_and_provisions_the_user(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    token = jwt_issuer.token(
        "doc-valid", role="doctor", email="Doc.Valid@Clinic.test", email_verified=True
    )
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == "doctor"
    assert body["email"] == "doc.valid@clinic.test"
    assert body["signed_in"] is True
    assert body["active"] is True
    # The same subject maps to the same row on the next request.
    again = client.get(ME, headers=bearer(jwt_issuer.token("doc-valid", role="doctor")))
    assert again.json()["id"] == body["id"]


def test_role_claim_may_be_a_list(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("okta-admin", role=["everyone", "admin"])  # type: ignore[arg-type]
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"


def test_expiry_within_leeway_is_accepted(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("doc-leeway", role="doctor", expires_in=-5)
    assert client.get(ME, headers=bearer(token)).status_code == 200


# -- refused: 401 -----------------------------------------------------------------------------


def test_missing_authorization_header(client: TestClient) -> None:
    response = client.get(ME)
    assert_unauthenticated(response, error=None)
    assert response.headers["www-authenticate"] == 'Bearer realm="portal"'


def test_non_bearer_scheme(client: TestClient) -> None:
    response = client.get(ME, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert_unauthenticated(response, error=None)


def test_empty_bearer_token(client: TestClient) -> None:
    assert_unauthenticated(client.get(ME, headers={"Authorization": "Bearer "}), error=None)


def test_malformed_jwt(client: TestClient) -> None:
    assert_unauthenticated(client.get(ME, headers=bearer("not.a.jwt")))


def test_expired_token(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("doc-expired", role="doctor", expires_in=-120)
    response = client.get(ME, headers=bearer(token))
    assert_unauthenticated(response)
    assert "expired" in response.json()["detail"]


def test_wrong_audience(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("doc-aud", role="doctor", audience="api://some-other-api")
    response = client.get(ME, headers=bearer(token))
    assert_unauthenticated(response)
    assert "audience" in response.json()["detail"]


def test_wrong_issuer(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("doc-iss", role="doctor", issuer="https://evil.example")
    response = client.get(ME, headers=bearer(token))
    assert_unauthenticated(response)
    assert "issuer" in response.json()["detail"]


def test_not_yet_valid(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    token = jwt_issuer.token("doc-nbf", role="doctor", not_before=int(time.time()) + 600)
    response = client.get(ME, headers=bearer(token))
    assert_unauthenticated(response)
    assert "not valid yet" in response.json()["detail"]


def test_missing_exp_claim(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    payload = valid_payload(jwt_issuer, "doc-noexp")
    del payload["exp"]
    key = jwt_issuer.keys[jwt_issuer.current_kid]
    token = jwt.encode(payload, key, algorithm="RS256", headers={"kid": jwt_issuer.current_kid})
    assert_unauthenticated(client.get(ME, headers=bearer(token)))


def test_key_not_in_jwks_claiming_a_known_kid(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt_issuer.token("admin-forged", role="admin", key=impostor)
    assert_unauthenticated(client.get(ME, headers=bearer(token)))


def test_tampered_payload(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    header, _, signature = jwt_issuer.token("doc-tamper", role="doctor").split(".")
    forged = b64url(json.dumps(valid_payload(jwt_issuer, "doc-tamper")).encode())
    assert_unauthenticated(client.get(ME, headers=bearer(f"{header}.{forged}.{signature}")))


def test_alg_none_is_refused(client: TestClient, jwt_issuer: JwtIssuer) -> None:
    for alg in ("none", "None", "NONE"):
        token = handmade_token(
            {"alg": alg, "typ": "JWT", "kid": jwt_issuer.current_kid},
            valid_payload(jwt_issuer, "admin-none"),
        )
        assert_unauthenticated(client.get(ME, headers=bearer(token)))


def test_hs256_with_the_public_key_as_secret_is_refused(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the issuer's public key."""
    public_pem = (
        jwt_issuer.keys[jwt_issuer.current_kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (public_pem, b"secret"):
        token = handmade_token(
            {"alg": "HS256", "typ": "JWT", "kid": jwt_issuer.current_kid},
            valid_payload(jwt_issuer, "admin-hs256"),
            lambda data, secret=secret: hmac.new(secret, data, hashlib.sha256).digest(),
        )
        response = client.get(ME, headers=bearer(token))
        assert_unauthenticated(response)
        assert "algorithm" in response.json()["detail"]


# -- JWKS: rotation and unknown keys ----------------------------------------------------------


def test_jwks_is_cached_between_requests(jwt_issuer: JwtIssuer) -> None:
    verifier = TokenVerifier(get_settings())
    before = jwt_issuer.jwks_requests
    for i in range(5):
        claims = verifier.verify(jwt_issuer.token(f"doc-cache-{i}", role="doctor"))
        assert claims["sub"] == f"doc-cache-{i}"
    assert jwt_issuer.jwks_requests - before == 1


@pytest.mark.usefixtures("restore_signing_key")
def test_rotated_key_is_accepted_after_refetch(jwt_issuer: JwtIssuer) -> None:
    verifier = TokenVerifier(get_settings(), min_jwks_refresh_seconds=0)
    old_token = jwt_issuer.token("doc-rotate", role="doctor")
    assert verifier.verify(old_token)["sub"] == "doc-rotate"
    fetched = jwt_issuer.jwks_requests

    new_kid = jwt_issuer.rotate()
    new_token = jwt_issuer.token("doc-rotate", role="doctor")
    assert new_kid not in verifier._jwks  # the verifier has not seen it yet
    assert verifier.verify(new_token)["sub"] == "doc-rotate"
    assert jwt_issuer.jwks_requests == fetched + 1
    # Both keys are published during the rotation window, so old tokens keep working.
    assert verifier.verify(old_token)["sub"] == "doc-rotate"
    assert jwt_issuer.jwks_requests == fetched + 1


@pytest.mark.usefixtures("restore_signing_key")
def test_rotated_key_is_accepted_through_the_api(
    client: TestClient, jwt_issuer: JwtIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(get_settings(), min_jwks_refresh_seconds=0)
    monkeypatch.setattr(security, "get_verifier", lambda: verifier)
    assert client.get(ME, headers=bearer(jwt_issuer.token("doc-rot", role="doctor"))).is_success
    jwt_issuer.rotate()
    response = client.get(ME, headers=bearer(jwt_issuer.token("doc-rot", role="doctor")))
    assert response.status_code == 200, response.text


def test_unknown_kid_does_not_hammer_the_jwks(jwt_issuer: JwtIssuer) -> None:
    verifier = TokenVerifier(get_settings(), min_jwks_refresh_seconds=60)
    verifier.verify(jwt_issuer.token("doc-kid", role="doctor"))
    before = jwt_issuer.jwks_requests
    for _ in range(20):
        token = jwt_issuer.token(
            "admin-kid",
            role="admin",
            kid=uuid.uuid4().hex[:12],
            key=jwt_issuer.keys[jwt_issuer.current_kid],
        )
        with pytest.raises(NotAuthenticated, match="unknown key"):
            verifier.verify(token)
    assert jwt_issuer.jwks_requests == before


def test_unknown_kid_is_refused_through_the_api_with_at_most_one_refetch(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    # Warm the app's verifier so the refresh interval starts now.
    assert client.get(ME, headers=bearer(jwt_issuer.token("doc-k", role="doctor"))).is_success
    before = jwt_issuer.jwks_requests
    for _ in range(15):
        token = jwt_issuer.token(
            "admin-kid-api",
            role="admin",
            kid=uuid.uuid4().hex,
            key=jwt_issuer.keys[jwt_issuer.current_kid],
        )
        assert_unauthenticated(client.get(ME, headers=bearer(token)))
    assert jwt_issuer.jwks_requests - before <= 1


# -- roles: 403 -------------------------------------------------------------------------------

PRODUCT = {"sku": "AUTH-TEST-1", "name": "Gauze", "price_cents": 500}


def test_doctor_may_not_use_admin_routes(
    client: TestClient, doctor: dict[str, str], admin: dict[str, str]
) -> None:
    response = client.post("/api/v1/products", json=PRODUCT, headers=doctor)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/forbidden"
    assert client.get("/api/v1/users", headers=doctor).status_code == 403
    assert client.get("/api/v1/audit", headers=doctor).status_code == 403
    # The same request as an admin succeeds, so the 403 was about the role.
    assert client.post("/api/v1/products", json=PRODUCT, headers=admin).status_code == 201


def test_deactivated_user_is_refused(client: TestClient, admin: dict[str, str], auth: Auth) -> None:
    doctor = auth("doctor", sub="doc-to-deactivate")
    user_id = client.get(ME, headers=doctor).json()["id"]
    response = client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False

    refused = client.get(ME, headers=doctor)
    assert refused.status_code == 403
    assert "deactivated" in refused.json()["detail"]
    # A fresh token for the same subject does not help.
    assert client.get(ME, headers=auth("doctor", sub="doc-to-deactivate")).status_code == 403

    client.patch(f"/api/v1/users/{user_id}", json={"active": True}, headers=admin)
    assert client.get(ME, headers=doctor).status_code == 200


def test_role_comes_from_the_users_table_once_the_row_exists(
    client: TestClient, admin: dict[str, str], auth: Auth
) -> None:
    second_admin = auth("admin", sub="admin-to-demote")
    me = client.get(ME, headers=second_admin).json()
    assert me["role"] == "admin"
    assert client.get("/api/v1/users", headers=second_admin).status_code == 200

    demoted = client.patch(f"/api/v1/users/{me['id']}", json={"role": "doctor"}, headers=admin)
    assert demoted.status_code == 200, demoted.text

    # The same token still claims admin; the table says doctor.
    assert client.get("/api/v1/users", headers=second_admin).status_code == 403
    assert client.get(ME, headers=second_admin).json()["role"] == "doctor"


@pytest.mark.parametrize("cache_seconds", [0.4, 0.0])
def test_a_change_made_by_another_process_applies_within_the_cache_time(
    app: Any, client: TestClient, db: Session, auth: Auth, cache_seconds: float
) -> None:
    """Each API process keeps a signed-in user's row for SIGNED_IN_USER_CACHE_SECONDS; a change
    made elsewhere (another worker, SQL) applies when that runs out, or at once with 0."""
    app.state.signed_in_users = TtlCache(cache_seconds)
    doctor = auth("doctor", sub="doc-changed-elsewhere")
    user_id = client.get(ME, headers=doctor).json()["id"]  # provisions the row (not cached)
    assert client.get(ME, headers=doctor).status_code == 200  # reads and caches it
    db.execute(update(User).where(User.id == uuid.UUID(user_id)).values(active=False))
    db.flush()

    if cache_seconds:
        assert client.get(ME, headers=doctor).status_code == 200  # still the cached row
        time.sleep(cache_seconds + 0.1)
    refused = client.get(ME, headers=doctor)
    assert refused.status_code == 403
    assert "deactivated" in refused.json()["detail"]


def test_a_doctor_cannot_escalate_by_claiming_admin(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    doctor_token = jwt_issuer.token("doc-escalate", role="doctor")
    assert client.get(ME, headers=bearer(doctor_token)).json()["role"] == "doctor"
    admin_claim = jwt_issuer.token("doc-escalate", role="admin")
    assert client.get("/api/v1/users", headers=bearer(admin_claim)).status_code == 403
    assert client.get(ME, headers=bearer(admin_claim)).json()["role"] == "doctor"


def test_admin_cannot_demote_or_deactivate_themselves(
    client: TestClient, admin: dict[str, str]
) -> None:
    my_id = client.get(ME, headers=admin).json()["id"]
    for change in ({"role": "doctor"}, {"active": False}):
        response = client.patch(f"/api/v1/users/{my_id}", json=change, headers=admin)
        assert response.status_code == 409, response.text
    assert client.get("/api/v1/users", headers=admin).status_code == 200


def test_unknown_user_without_role_claim_is_refused(
    client: TestClient, jwt_issuer: JwtIssuer
) -> None:
    token = jwt_issuer.token("stranger", email="stranger@elsewhere.test")
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 403, response.text
    assert "invite" in response.json()["detail"]
    # Nothing was provisioned: an unrecognised role value does not help either.
    odd = jwt_issuer.token("stranger", role="superuser", email="stranger@elsewhere.test")
    assert client.get(ME, headers=bearer(odd)).status_code == 403


def test_invited_user_gets_the_invited_role(
    client: TestClient, admin: dict[str, str], jwt_issuer: JwtIssuer
) -> None:
    invite = client.post(
        "/api/v1/users",
        json={"email": "invited.doctor@clinic.example.org", "role": "doctor"},
        headers=admin,
    )
    assert invite.status_code == 201, invite.text
    assert invite.json()["signed_in"] is False

    # No role claim; the e-mail matches case-insensitively.
    token = jwt_issuer.token(
        "okta|invited-1", email="Invited.Doctor@Clinic.Example.ORG", email_verified=True
    )
    me = client.get(ME, headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == invite.json()["id"]
    assert me.json()["role"] == "doctor"
    assert me.json()["signed_in"] is True
    assert client.post("/api/v1/products", json=PRODUCT, headers=bearer(token)).status_code == 403


def test_invited_role_wins_over_the_token_claim(
    client: TestClient, admin: dict[str, str], jwt_issuer: JwtIssuer
) -> None:
    client.post(
        "/api/v1/users",
        json={"email": "invited.two@clinic.example.org", "role": "doctor"},
        headers=admin,
    )
    token = jwt_issuer.token(
        "okta|invited-2",
        role="admin",
        email="invited.two@clinic.example.org",
        email_verified=True,
    )
    assert client.get(ME, headers=bearer(token)).json()["role"] == "doctor"
    assert client.get("/api/v1/users", headers=bearer(token)).status_code == 403


def test_an_invitation_links_only_once(
    client: TestClient, admin: dict[str, str], jwt_issuer: JwtIssuer
) -> None:
    """A second subject presenting the same e-mail does not take over the linked account."""
    invite = client.post(
        "/api/v1/users",
        json={"email": "linked.once@clinic.example.org", "role": "admin"},
        headers=admin,
    ).json()
    first = jwt_issuer.token(
        "okta|linked-1", email="linked.once@clinic.example.org", email_verified=True
    )
    assert client.get(ME, headers=bearer(first)).json()["id"] == invite["id"]
    second = jwt_issuer.token(
        "okta|linked-2", email="linked.once@clinic.example.org", email_verified=True
    )
    assert client.get(ME, headers=bearer(second)).status_code == 403


def test_an_id_token_is_not_accepted_as_an_access_token(client, jwt_issuer) -> None:
    token = jwt_issuer.token("someone", role="admin", nonce="n-123", at_hash="abc")
    response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "ID token" in response.json()["detail"]


def test_a_user_provisioned_by_a_request_that_failed_is_not_kept_in_the_cache(
    client: TestClient, auth: Auth
) -> None:
    """The first request of a new user writes its row; when that request fails, the row is
    rolled back, so the process must not remember it (GET /users/me answered 404, and writes
    naming the user broke, until the cache ran out)."""
    doctor = auth("doctor", sub="doc-first-request-fails")
    missing_patient = {
        "patient_id": str(uuid.uuid4()),
        "items": [{"product_id": str(uuid.uuid4()), "quantity": 1}],
    }

    failed = client.post("/api/v1/orders", json=missing_patient, headers=doctor)
    assert failed.status_code == 404, failed.text

    me = client.get(ME, headers=doctor)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "doctor"
