"""Tokens from the development identity provider (oidc-provider-mock), for curl and scripts.

It runs the real authorization-code flow: set the user's claims, submit the provider's login
form for that subject, take the code from the redirect and exchange it at the token endpoint.
Never used in production (the CLI refuses), where tokens come from Okta or Auth0.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import httpx

DEMO_USERS = {
    "admin": {"email": "admin@demo.clinic", "name": "Ada Admin"},
    "doctor": {"email": "doctor@demo.clinic", "name": "Dr. Dana Doctor"},
}
REDIRECT_URI = "http://127.0.0.1:8000/auth/callback"


class DevTokenError(RuntimeError):
    pass


def obtain_dev_token(
    issuer: str,
    *,
    role: str,
    email: str | None = None,
    email_verified: bool = True,
    client_id: str = "portal-dev",
    client_secret: str = "portal-dev-secret",  # noqa: S107 - the dev provider accepts any
    timeout: float = 5.0,
) -> dict[str, str]:
    """Sign in as `email` (default: the demo user of `role`) and return the token response.

    The provider's user carries `email_verified` as given (default true, like an address a
    real provider has confirmed), so an invitation for that address can be claimed.
    """
    email = (email or DEMO_USERS[role]["email"]).lower()
    name = DEMO_USERS[role]["name"] if email == DEMO_USERS[role]["email"] else email
    claims = {"email": email, "email_verified": email_verified, "role": role, "name": name}
    try:
        httpx.put(
            f"{issuer.rstrip('/')}/users/{email}", json=claims, timeout=timeout
        ).raise_for_status()
    except httpx.HTTPError as exc:
        raise DevTokenError(f"the development identity provider at {issuer} is not up") from exc
    return sign_in_as(
        issuer, email, client_id=client_id, client_secret=client_secret, timeout=timeout
    )


def sign_in_as(
    issuer: str,
    subject: str,
    *,
    client_id: str = "portal-dev",
    client_secret: str = "portal-dev-secret",  # noqa: S107 - the dev provider accepts any
    timeout: float = 5.0,
) -> dict[str, str]:
    """Run the provider's authorization-code flow for `subject` with the claims it already
    holds (a demo user, or one set by `obtain_dev_token`) and return the token response."""
    with httpx.Client(base_url=issuer.rstrip("/"), timeout=timeout) as http:
        try:
            discovery = http.get("/.well-known/openid-configuration").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise DevTokenError(f"the development identity provider at {issuer} is not up") from exc
        state = secrets.token_urlsafe(16)
        login = http.post(
            discovery["authorization_endpoint"],
            params={
                "client_id": client_id,
                "redirect_uri": REDIRECT_URI,
                "response_type": "code",
                "scope": "openid email profile",
                "state": state,
            },
            data={"sub": subject},
        )
        location = login.headers.get("location", "")
        query = parse_qs(urlsplit(location).query)
        if (
            login.status_code not in (302, 303)
            or query.get("state") != [state]
            or "code" not in query
        ):
            raise DevTokenError(f"the login flow did not return a code (HTTP {login.status_code})")
        token = http.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT_URI,
            },
            auth=(client_id, client_secret),
        )
        if token.status_code != 200:
            raise DevTokenError(f"the token endpoint answered {token.status_code}: {token.text}")
        body: dict[str, str] = token.json()
        return body
