"""OIDC bearer-token authentication and role checks.

Two kinds of access token are accepted from the configured issuer:
- JWTs (what Okta and Auth0 issue for an API audience) are verified locally against the
  issuer's JWKS (cached; refreshed when an unknown `kid` appears): signature, `iss`, `aud`,
  `exp`, `nbf`.
- Opaque tokens only as OIDC_OPAQUE_TOKENS allows: at the issuer's userinfo endpoint (what the
  development identity provider offers; it cannot tell which application a token was issued
  to), or by token introspection (RFC 7662) with the portal's client credentials, which can.
  A positive answer is cached briefly (never past the token's expiry), a refusal too.

Every route declares who may call it with exactly one of `require_roles(...)` or `public_route`;
a test walks the route table to enforce it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote_plus

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app import http
from app.actor import Actor, Role
from app.cache import TtlCache
from app.config import Settings, get_settings
from app.db import DbSession
from app.errors import (
    EmailAlreadyLinked,
    EmailNotVerified,
    Forbidden,
    IdentityProviderUnavailable,
    NotAuthenticated,
    raises,
)
from app.users import service as users

ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
Claims = dict[str, Any]
# RFC 6750's b64token: what a bearer token may be made of. Anything else is refused unasked.
BEARER_TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_OPAQUE_TOKEN_LENGTH = 4096


class TokenVerifier:
    """Verifies access tokens for one issuer. One instance per process (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.Client | None = None,
        *,
        min_jwks_refresh_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._http = http or httpx.Client(timeout=5.0)
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = 0.0
        self._min_jwks_refresh = min_jwks_refresh_seconds
        self._verified: TtlCache[str, Claims] = TtlCache(settings.oidc_userinfo_cache_seconds)
        # sha256(token) -> why it was refused
        self._refused: TtlCache[str, str] = TtlCache(settings.oidc_negative_cache_seconds)

    # -- issuer metadata -------------------------------------------------------------------
    def _get_json(self, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.get(url, **kwargs)
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(f"cannot reach the identity provider: {exc}") from exc
        if response.status_code >= 500:
            raise IdentityProviderUnavailable(
                f"the identity provider answered {response.status_code}"
            )
        return response

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            response = self._get_json(self.issuer + "/.well-known/openid-configuration")
            if response.status_code != 200:
                raise IdentityProviderUnavailable("the issuer has no OIDC discovery document")
            document = response.json()
            if document.get("issuer", "").rstrip("/") != self.issuer:
                raise IdentityProviderUnavailable("the discovery document names another issuer")
            self._discovery = document
        return self._discovery

    def _fetch_jwks(self) -> None:
        response = self._get_json(self.discovery()["jwks_uri"])
        if response.status_code != 200:
            raise IdentityProviderUnavailable("the issuer's JWKS could not be read")
        keys: dict[str, jwt.PyJWK] = {}
        for data in response.json().get("keys", []):
            if data.get("use", "sig") != "sig" or "kid" not in data:
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key type we cannot use; others may still verify
        self._jwks = keys
        self._jwks_fetched_at = time.monotonic()

    def signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._jwks_fetched_at
            if (
                kid not in self._jwks
                and (
                    not self._jwks
                    or age >= self._min_jwks_refresh
                    or age >= self.settings.oidc_jwks_cache_seconds
                )
            ) or age >= self.settings.oidc_jwks_cache_seconds:
                self._fetch_jwks()
            key = self._jwks.get(kid)
        if key is None:
            raise NotAuthenticated("the token was signed with an unknown key")
        return key

    # -- verification ----------------------------------------------------------------------
    def verify(self, token: str) -> Claims:
        if token.count(".") == 2:
            return self._verify_jwt(token)
        if self.settings.opaque_tokens == "off":
            raise NotAuthenticated(
                "opaque access tokens are not accepted; send a JWT access token issued for"
                f" the audience {self.settings.expected_audience}"
            )
        return self._verify_opaque(token)

    def _verify_jwt(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise NotAuthenticated("the token is malformed") from exc
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise NotAuthenticated("the token's signing algorithm is not accepted")
        key = self.signing_key(str(header.get("kid", "")))
        try:
            claims: Claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.settings.expected_audience,
                issuer=self.discovery()["issuer"],
                leeway=self.settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthenticated("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise NotAuthenticated("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise NotAuthenticated("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise NotAuthenticated("the token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(f"the token is not valid: {exc}") from exc
        if "nonce" in claims or "at_hash" in claims:
            # An ID token proves a sign-in to the client; it does not authorise API calls.
            raise NotAuthenticated("an ID token is not an access token")
        return claims

    def _verify_opaque(self, token: str) -> Claims:
        if len(token) > MAX_OPAQUE_TOKEN_LENGTH or not BEARER_TOKEN_SYNTAX.fullmatch(token):
            raise NotAuthenticated("the token is malformed")
        cache_key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._verified.get(cache_key)
        if cached is not None:
            return cached
        refused = self._refused.get(cache_key)
        if refused is not None:
            raise NotAuthenticated(refused)
        try:
            if self.settings.opaque_tokens == "introspection":
                claims = self._introspect(token)
            else:
                claims = self._userinfo(token)
        except NotAuthenticated as exc:
            # Only the issuer's verdict is remembered; an unreachable issuer is asked again.
            self._refused.put(cache_key, exc.detail)
            raise
        expires_at = claims.get("exp")
        if isinstance(expires_at, int | float):
            self._verified.put(cache_key, claims, ttl=expires_at - time.time())
        else:
            self._verified.put(cache_key, claims)
        return claims

    def _userinfo(self, token: str) -> Claims:
        response = self._get_json(
            self.discovery()["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            raise NotAuthenticated("the token is not active")
        claims: Claims = response.json()
        if not claims.get("sub"):
            raise NotAuthenticated("the identity provider returned no subject")
        return claims

    def _client_authentication(self) -> str:
        """client_secret_basic (RFC 6749 section 2.3.1): id and secret form-urlencoded."""
        pair = f"{quote_plus(self.settings.oidc_client_id)}:"
        pair += quote_plus(self.settings.oidc_client_secret)
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def _introspect(self, token: str) -> Claims:
        """Ask the issuer about the token (RFC 7662) and accept it only if it is an active
        access token for this API: `aud` names OIDC_AUDIENCE or, when the answer has no `aud`,
        `client_id` is one of OIDC_ACCEPTED_CLIENT_IDS."""
        endpoint = self.discovery().get("introspection_endpoint")
        if not endpoint:
            raise IdentityProviderUnavailable(
                "OIDC_OPAQUE_TOKENS=introspection, but the issuer's discovery document names no"
                " introspection_endpoint"
            )
        try:
            response = self._http.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={
                    "Authorization": self._client_authentication(),
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(f"cannot reach the identity provider: {exc}") from exc
        if response.status_code in (401, 403):
            raise IdentityProviderUnavailable(
                "the identity provider refused the portal's client credentials"
                " (OIDC_CLIENT_ID, OIDC_CLIENT_SECRET) at its introspection endpoint"
            )
        if response.status_code != 200:
            raise IdentityProviderUnavailable(
                f"the identity provider's introspection answered {response.status_code}"
            )
        try:
            answer = response.json()
        except ValueError as exc:
            raise IdentityProviderUnavailable("the introspection answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise IdentityProviderUnavailable("the introspection answer is not a JSON object")
        if answer.get("active") is not True:
            raise NotAuthenticated("the token is not active")
        if str(answer.get("iss", self.issuer)).rstrip("/") != self.issuer:
            raise NotAuthenticated("the token is from another issuer")
        if answer.get("token_type") == "refresh_token":
            raise NotAuthenticated("a refresh token is not an access token")
        audience = answer.get("aud")
        audiences = audience if isinstance(audience, list) else [audience] if audience else []
        if audiences:
            if self.settings.expected_audience not in audiences:
                raise NotAuthenticated("the token is for another audience")
        elif answer.get("client_id") not in self.settings.accepted_client_ids:
            raise NotAuthenticated("the token was issued to another application")
        if not answer.get("sub"):
            raise NotAuthenticated("the identity provider returned no subject")
        claims: Claims = answer
        return claims


@lru_cache
def get_verifier() -> TokenVerifier:
    return TokenVerifier(get_settings())


def claimed_role(claims: Claims, claim: str) -> Role | None:
    """The role a token claims, if any. Lists (Okta groups, Auth0 roles) are accepted."""
    value = claims.get(claim)
    values = value if isinstance(value, list) else [value]
    for role in (Role.ADMIN, Role.DOCTOR):
        if role.value in values:
            return role
    return None


def email_is_verified(claims: Claims, claim: str) -> bool:
    """Whether the issuer vouches for the token's e-mail. Only a true value counts (some
    providers send the string "true"); absent, false or anything else does not."""
    value = claims.get(claim)
    return value is True or (isinstance(value, str) and value.lower() == "true")


bearer_scheme = HTTPBearer(auto_error=False, description="OIDC access token")


@raises(
    NotAuthenticated, Forbidden, EmailNotVerified, EmailAlreadyLinked, IdentityProviderUnavailable
)
def current_actor(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("send an OIDC access token as `Authorization: Bearer ...`", error="")
    claims = get_verifier().verify(credentials.credentials)
    settings = get_settings()
    request_id = getattr(request.state, "request_id", None)
    client_address = http.client_address(request)
    subject = str(claims["sub"])
    recent: TtlCache[str, users.SignedInUser] = request.app.state.signed_in_users
    user = recent.get(subject)
    if user is None:
        row = users.resolve_signed_in_user(
            session,
            subject=subject,
            email=claims.get("email"),
            email_verified=email_is_verified(claims, settings.oidc_email_verified_claim),
            claimed_role=claimed_role(claims, settings.oidc_role_claim),
            auto_provision=settings.auto_provision_users,
            via=Actor(
                subject="system:oidc-sign-in",
                role=Role.SYSTEM,
                request_id=request_id,
                client_address=client_address,
            ),
        )
        user = users.SignedInUser.of(row)
        # A row written by this request vanishes if the request fails (rolled back): a later
        # request must not find it in the cache, so only rows read as they stand are cached.
        if not session.info.pop(users.WROTE_SIGNED_IN_USER, False):
            recent.put(subject, user)
    return Actor(
        subject=subject,
        role=user.role,
        user_id=user.id,
        email=user.email,
        request_id=request_id,
        client_address=client_address,
    )


def require_roles(*roles: Role) -> Callable[..., Awaitable[Actor]]:
    """A dependency that authenticates the caller and admits only the given roles."""
    allowed = frozenset(roles)

    async def dependency(actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
        if actor.role not in allowed:
            raise Forbidden(
                f"this action needs the role {' or '.join(sorted(allowed))}; you are {actor.role}"
            )
        return actor

    dependency.__portal_roles__ = allowed  # type: ignore[attr-defined]
    return raises(Forbidden)(dependency)


def public_route() -> None:
    """Marks a route that anyone may call (health, problem types, patient-facing pages)."""


public_route.__portal_roles__ = frozenset()  # type: ignore[attr-defined]

AdminActor = Annotated[Actor, Depends(require_roles(Role.ADMIN))]
StaffActor = Annotated[Actor, Depends(require_roles(Role.ADMIN, Role.DOCTOR))]
Public = Depends(public_route)
