"""The API's documentation page: Swagger UI at `/docs`, working without internet, with sign-in.

FastAPI's own `/docs` loads Swagger UI's script and styles from a CDN, so it is a blank page on
a machine without internet. Here the page loads them from the server: the files ship in the
`fastapi-offline` package (kept up to date with Swagger UI releases) and are mounted as static
files. ReDoc is not offered (its page, too, loads from a CDN).

Signing in: the OpenAPI document declares, next to the plain bearer scheme, an OAuth2
authorization-code scheme whose URLs come from the issuer's discovery document, so the same page
works with the development provider, Okta and Auth0. Swagger UI runs the flow as a public
client with PKCE (S256) and sends the access token it gets as `Authorization: Bearer ...`,
which the API verifies like any other token (`app.security`).
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.config import Settings
from app.errors import IdentityProviderUnavailable
from app.security import Public, get_verifier

logger = logging.getLogger(__name__)

DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs-assets"
OIDC_SCHEME = "oidc"
SCOPES = {
    "openid": "sign in",
    "email": "your e-mail address",
    "profile": "your name",
}
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    # Swagger UI's default validator badge is an image from an outside service.
    "validatorUrl": None,
}


def swagger_ui_assets() -> Path:
    """Swagger UI's files as the installed `fastapi-offline` package ships them."""
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def install_api_docs(app: FastAPI, settings: Settings) -> None:
    """Serve `/docs` and its OAuth2 redirect page from local assets; declare the sign-in.

    Build the app with `docs_url=None, redoc_url=None` so FastAPI's CDN pages are not served.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_assets()), name="docs-assets")
    init_oauth: dict[str, Any] = {
        "clientId": settings.oidc_docs_client_id or settings.oidc_client_id,
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": " ".join(SCOPES),
    }
    if settings.oidc_audience:
        # Auth0 issues a JWT for the API only when asked for its audience; providers ignore
        # parameters they do not know (RFC 6749, 3.1).
        init_oauth["additionalQueryStringParams"] = {"audience": settings.oidc_audience}
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False, dependencies=[Public])
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            init_oauth=init_oauth,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False, dependencies=[Public])
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        if OIDC_SCHEME not in schema.get("components", {}).get("securitySchemes", {}):
            add_sign_in(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_sign_in(schema: dict[str, Any]) -> None:
    """Declare the issuer's authorization-code flow and offer it wherever a bearer token is.

    Without the issuer's discovery document the flow's URLs are unknown: the document is served
    with the bearer scheme alone and the flow is added on a later request.
    """
    try:
        discovery = get_verifier().discovery()
    except IdentityProviderUnavailable as exc:
        logger.warning("/docs sign-in not declared yet: %s", exc)
        return
    authorization_url = discovery.get("authorization_endpoint")
    token_url = discovery.get("token_endpoint")
    if not authorization_url or not token_url:
        return
    schemes: dict[str, Any] = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    bearer = {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer"
    }
    schemes[OIDC_SCHEME] = {
        "type": "oauth2",
        "description": (
            "Sign in at the OIDC provider (authorization code with PKCE); the access token is"
            " sent as a bearer token."
        ),
        "flows": {
            "authorizationCode": {
                "authorizationUrl": authorization_url,
                "tokenUrl": token_url,
                "scopes": SCOPES,
            }
        },
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            requirements = operation.get("security")
            if requirements and any(bearer & requirement.keys() for requirement in requirements):
                requirements.append({OIDC_SCHEME: []})
