"""How a verified token finds its `users` row: invitations are claimed only with a verified
e-mail, and an e-mail that already belongs to another subject is refused cleanly.

Tokens come from the session's real JWT issuer; every check goes through `GET /users/me`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import AuditEntry, User
from tests.fixtures.identity import JwtIssuer
from tests.fixtures.problems import assert_problem

ME = "/api/v1/users/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def invite(client: TestClient, admin: dict[str, str], email: str, role: str) -> dict[str, Any]:
    response = client.post("/api/v1/users", json={"email": email, "role": role}, headers=admin)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def users_with_email(db: Session, email: str) -> list[User]:
    db.expire_all()
    return list(db.scalars(select(User).where(User.email == email)))


def audit_rows(db: Session, action: str, entity_id: object) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == action, AuditEntry.entity_id == str(entity_id))
        )
        or 0
    )


# -- invitations need a verified e-mail --------------------------------------------------------


@pytest.mark.parametrize("verified", [None, False, "false", "yes", 1])
def test_an_invite_is_not_claimed_with_an_unverified_email(
    client: TestClient,
    admin: dict[str, str],
    jwt_issuer: JwtIssuer,
    db: Session,
    verified: object,
) -> None:
    """The reproduction: an admin invites boss@ as admin; a doctor token for that address
    without a verified e-mail must not become that admin."""
    email = f"boss-{uuid.uuid4().hex[:6]}@clinicmail.org"
    invited = invite(client, admin, email, "admin")
    claims: dict[str, Any] = {} if verified is None else {"email_verified": verified}
    token = jwt_issuer.token(f"idp|{uuid.uuid4().hex}", role="doctor", email=email, **claims)

    response = client.get(ME, headers=bearer(token))

    body = assert_problem(response, 403, "/problems/email-not-verified")
    assert "verified" in body["detail"]
    assert client.get("/api/v1/users", headers=bearer(token)).status_code == 403
    # Nothing written: the invite is still unclaimed, no second row, no audit row.
    rows = users_with_email(db, email)
    assert [(str(row.id), row.oidc_subject, row.role) for row in rows] == [
        (invited["id"], None, "admin")
    ]
    assert audit_rows(db, "user.linked", invited["id"]) == 0


@pytest.mark.parametrize("verified", [True, "true", "TRUE"])
def test_a_verified_email_claims_the_invite_and_the_invited_role_wins(
    client: TestClient,
    admin: dict[str, str],
    jwt_issuer: JwtIssuer,
    db: Session,
    verified: object,
) -> None:
    email = f"boss-{uuid.uuid4().hex[:6]}@clinicmail.org"
    invited = invite(client, admin, email, "admin")
    subject = f"idp|{uuid.uuid4().hex}"
    # The token claims doctor; the invitation (the portal's table) says admin.
    token = jwt_issuer.token(subject, role="doctor", email=email, email_verified=verified)

    me = client.get(ME, headers=bearer(token))

    assert me.status_code == 200, me.text
    assert me.json()["id"] == invited["id"]
    assert me.json()["role"] == "admin"
    assert me.json()["signed_in"] is True
    assert [row.oidc_subject for row in users_with_email(db, email)] == [subject]
    assert audit_rows(db, "user.linked", invited["id"]) == 1


@pytest.fixture
def custom_verified_claim() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OIDC_EMAIL_VERIFIED_CLAIM", "https://portal.example/email_verified")
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


@pytest.mark.usefixtures("custom_verified_claim")
def test_the_verified_claim_name_is_configurable(
    client: TestClient, admin: dict[str, str], jwt_issuer: JwtIssuer
) -> None:
    email = f"custom-{uuid.uuid4().hex[:6]}@clinicmail.org"
    invited = invite(client, admin, email, "doctor")
    # The standard claim no longer counts once another one is configured ...
    standard = jwt_issuer.token("idp|custom-1", email=email, email_verified=True)
    assert_problem(client.get(ME, headers=bearer(standard)), 403, "/problems/email-not-verified")
    # ... the configured one does.
    custom = jwt_issuer.token(
        "idp|custom-2", email=email, **{"https://portal.example/email_verified": True}
    )
    me = client.get(ME, headers=bearer(custom))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == invited["id"]


def test_an_unverified_email_provisions_a_user_without_holding_the_address(
    client: TestClient, admin: dict[str, str], jwt_issuer: JwtIssuer, db: Session
) -> None:
    """A fresh user whose role the identity provider vouches for is created, but an address the
    provider does not vouch for is not kept: it cannot squat a later invitation, and a linked
    staff address is not revealed by a refusal."""
    email = f"fresh-{uuid.uuid4().hex[:6]}@clinic.example.org"
    token = jwt_issuer.token(f"idp|{uuid.uuid4().hex}", role="doctor", email=email)
    me = client.get(ME, headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "doctor"
    assert me.json()["email"] is None

    invited = invite(client, admin, email, "admin")  # the real owner can still be invited
    owner = jwt_issuer.token(
        f"idp|{uuid.uuid4().hex}", role="doctor", email=email, email_verified=True
    )
    claimed = client.get(ME, headers=bearer(owner))
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["id"], claimed.json()["role"]) == (invited["id"], "admin")

    # An unverified token for that now-linked address is not told it belongs to someone.
    probe = jwt_issuer.token(f"idp|{uuid.uuid4().hex}", role="doctor", email=email)
    answer = client.get(ME, headers=bearer(probe))
    assert answer.status_code == 200, answer.text
    assert answer.json()["email"] is None and answer.json()["role"] == "doctor"


# -- an e-mail already linked to another subject -----------------------------------------------


@pytest.mark.parametrize("second_role", ["doctor", "admin", None])
def test_an_email_linked_to_another_subject_is_refused_not_a_server_error(
    client: TestClient, jwt_issuer: JwtIssuer, db: Session, second_role: str | None
) -> None:
    email = f"taken-{uuid.uuid4().hex[:6]}@clinic.example.org"
    first_subject = f"idp|{uuid.uuid4().hex}"
    first = jwt_issuer.token(first_subject, role="doctor", email=email, email_verified=True)
    owner = client.get(ME, headers=bearer(first))
    assert owner.status_code == 200, owner.text

    second = jwt_issuer.token(
        f"idp|{uuid.uuid4().hex}", role=second_role, email=email, email_verified=True
    )
    response = client.get(ME, headers=bearer(second))

    body = assert_problem(response, 403, "/problems/email-already-linked")
    assert "administrator" in body["detail"]
    assert [(str(row.id), row.oidc_subject) for row in users_with_email(db, email)] == [
        (owner.json()["id"], first_subject)
    ]
    # The first account is untouched and keeps working.
    assert client.get(ME, headers=bearer(first)).json()["id"] == owner.json()["id"]


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u212aate-{tag}@clinicmail.org",  # KELVIN SIGN: str.lower() makes it an ASCII k
        "kate-{tag}@clinicmail.org\u200b",  # a zero-width space after the address
        "kate-{tag}@clinicmail.\u043erg",  # a Cyrillic o
    ],
)
def test_a_lookalike_email_never_claims_an_invitation(
    client: TestClient,
    admin: dict[str, str],
    jwt_issuer: JwtIssuer,
    db: Session,
    lookalike: str,
) -> None:
    """Only the exact (ASCII) address claims an invite, even when the provider vouches for the
    look-alike: the sign-in is refused or gets an account of its own, never the invited role."""
    tag = uuid.uuid4().hex[:6]
    email = f"kate-{tag}@clinicmail.org"
    invited = invite(client, admin, email, "admin")
    subject = f"idp|{uuid.uuid4().hex}"
    token = jwt_issuer.token(
        subject, role="doctor", email=lookalike.format(tag=tag), email_verified=True
    )

    response = client.get(ME, headers=bearer(token))

    assert response.status_code in (200, 403), response.text
    if response.status_code == 200:
        assert response.json()["role"] == "doctor"
    rows = users_with_email(db, email)
    assert [(str(row.id), row.oidc_subject, row.role) for row in rows] == [
        (invited["id"], None, "admin")
    ]
