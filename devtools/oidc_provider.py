"""The development identity provider that `portal up` runs: oidc-provider-mock, plus what
Swagger UI at `/docs` needs to sign in the way it does at Okta or Auth0.

- PKCE (RFC 7636), S256 only: a code requested with a challenge is exchanged only with its
  verifier, and a client that sends no secret must use PKCE.
- Public clients: the token endpoint accepts a client that sends only its id (Swagger UI
  holds no secret).
- CORS on the token endpoint for pages on loopback origins: Swagger UI exchanges the code from
  the `/docs` page, a different origin than the provider's.

oidc-provider-mock builds its authorization server when its app is created, from the grant
class its module names; this module puts its own subclass there first. The package is pinned in
`requirements.lock`, and tests/api_docs/test_docs_sign_in.py drives this provider over HTTP and
from a browser, so an upgrade that changes those internals fails there.

Run it as `python -m devtools.oidc_provider` with oidc-provider-mock's own options. Never used in
production, where Okta or Auth0 is the provider.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import flask
import oidc_provider_mock._app as mock_app
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from oidc_provider_mock.__main__ import run
from oidc_provider_mock._storage import AuthorizationCode

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_ENDPOINT = f"{mock_app.blueprint.name}.issue_token"


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with the S256 method only (`plain` protects nothing once the code is seen)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        super().validate_code_challenge(grant, redirect_uri)
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")


@dataclasses.dataclass(kw_only=True, frozen=True)
class PkceAuthorizationCode(AuthorizationCode):  # type: ignore[misc]
    code_challenge: str | None = None
    code_challenge_method: str | None = None


class PkceAuthorizationCodeGrant(mock_app.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        S256CodeChallenge(required=True)(self)

    def save_authorization_code(self, code: str, request: Any) -> None:
        super().save_authorization_code(code, request)
        storage = mock_app.storage
        saved = storage.get_authorization_code(code)
        data = request.payload.data
        storage.store_authorization_code(
            PkceAuthorizationCode(
                **{f.name: getattr(saved, f.name) for f in dataclasses.fields(saved)},
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
            )
        )


def allow_loopback_pages(response: flask.Response) -> flask.Response:
    """Let a page on a loopback origin (the API's `/docs`) call the token endpoint."""
    origin = flask.request.headers.get("Origin", "")
    if flask.request.endpoint == TOKEN_ENDPOINT and urlsplit(origin).hostname in LOOPBACK_HOSTS:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = (
            "Accept, Authorization, Content-Type, X-Requested-With"
        )
        response.headers.add("Vary", "Origin")
    return response


def main() -> None:
    mock_app.AuthorizationCodeGrant = PkceAuthorizationCodeGrant
    mock_app.blueprint.after_app_request(allow_loopback_pages)
    run()


if __name__ == "__main__":
    main()
