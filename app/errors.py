"""Every error leaves the API as RFC 9457 problem details with a stable `type`.

Domain errors subclass `PortalError` and carry their HTTP meaning; one set of handlers renders
them, FastAPI's validation errors and Starlette's HTTP errors the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.logs import redact_path

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"
# OpenAPI extension on a response: the problem `type`s it can carry (see app/openapi.py).
PROBLEM_TYPES = "x-problem-types"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"


class PortalError(Exception):
    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    # Response headers this problem carries, documented in the OpenAPI answer: name -> meaning.
    response_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class NotFound(PortalError):
    status = 404
    slug = "not-found"
    title = "Not found"

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} does not exist", entity=entity)


class Conflict(PortalError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class DuplicateValue(Conflict):
    slug = "duplicate"
    title = "Already exists"


class InvalidStateTransition(Conflict):
    slug = "invalid-state-transition"
    title = "Not allowed in the current state"


class InsufficientStock(Conflict):
    slug = "insufficient-stock"
    title = "Not enough stock"


class Unprocessable(PortalError):
    status = 422
    slug = "validation-error"
    title = "The request is not valid"


class NotAuthenticated(PortalError):
    status = 401
    slug = "not-authenticated"
    title = "Authentication required"
    response_headers = {"WWW-Authenticate": "`Bearer` challenge (RFC 6750) with the reason"}

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = (
            f'Bearer realm="portal", error="{error}", error_description="{detail}"'
            if error
            else 'Bearer realm="portal"'
        )


class PhiInUrl(PortalError):
    """Personal data sent in the URL, which access and proxy logs keep: refused, never used."""

    status = 400
    slug = "phi-in-url"
    title = "Personal data does not belong in the URL"


class Forbidden(PortalError):
    status = 403
    slug = "forbidden"
    title = "Not allowed for your role"


class EmailNotVerified(Forbidden):
    """An invitation is claimed by e-mail only when the identity provider vouches for it."""

    slug = "email-not-verified"
    title = "The e-mail address is not verified"


class EmailAlreadyLinked(Forbidden):
    """The token's e-mail belongs to an account already signed in with another subject."""

    slug = "email-already-linked"
    title = "The e-mail address belongs to another account"


class TooManyRequests(PortalError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"
    response_headers = {"Retry-After": "seconds until the client's window has room again"}

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many requests from your address; try again in {retry_after} seconds."
        )
        self.headers["Retry-After"] = str(retry_after)


class IdentityProviderUnavailable(PortalError):
    status = 503
    slug = "identity-provider-unavailable"
    title = "The identity provider could not be reached"


ErrorClass = type[PortalError]
F = TypeVar("F", bound=Callable[..., Any])


def raises(*errors: ErrorClass) -> Callable[[F], F]:
    """Declares the problems a dependency can answer with; every route that depends on it
    documents them (app/openapi.py walks each route's dependencies)."""

    def mark(function: F) -> F:
        declared: tuple[ErrorClass, ...] = getattr(function, "__portal_problems__", ())
        function.__portal_problems__ = (*declared, *errors)  # type: ignore[attr-defined]
        return function

    return mark


def problem_responses(*errors: ErrorClass) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the domain problems it can answer with besides the generic ones
    (authentication, validation, body limits, unknown ids) that app/openapi.py derives."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        response = responses.setdefault(
            error.status,
            {
                "description": HTTPStatus(error.status).phrase,
                "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
                PROBLEM_TYPES: [],
            },
        )
        response[PROBLEM_TYPES].append(PROBLEM_BASE + error.slug)
    return responses


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if slug != "about:blank" else slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Slugs for generic HTTP errors raised by the framework (unknown route, wrong method, ...).
_HTTP_SLUGS = {
    400: "bad-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    # A rule over the whole body (several fields at once) names no field: "" rather than a
    # made-up field "body", which clients (and fuzzers) would take for a property of that name.
    return ".".join(str(part) for part in loc if part != "body")


async def _portal_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PortalError)
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers or None,
        **exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return problem(
            400,
            "malformed-json",
            "The body is not valid JSON",
            "The request body could not be parsed as JSON.",
            instance=request.url.path,
        )
    invalid = [
        {"field": _location(err.get("loc", ())), "message": err.get("msg", ""), "code": err["type"]}
        for err in errors
    ]
    summary = "; ".join(
        f"{item['field']}: {item['message']}" if item["field"] else item["message"]
        for item in invalid[:5]
    )
    return problem(
        422,
        Unprocessable.slug,
        Unprocessable.title,
        summary,
        instance=request.url.path,
        errors=invalid,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    slug = _HTTP_SLUGS.get(status, "http-error")
    title = HTTPStatus(status).phrase
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        # Starlette names the methods of the first route of the path only; list them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return problem(status, slug, title, detail, instance=request.url.path, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The client gets no internals. The log gets the type, route and request id, never the
    # exception's text: a validation error's text repeats the input, PHI included. (uvicorn logs
    # the traceback after this, through the redacting filter of app/logs.py.)
    request_id = getattr(request.state, "request_id", None) or "-"
    logger.error(
        "unhandled %s in %s %s (request %s)",
        type(exc).__name__,
        request.method,
        redact_path(request.url.path),
        request_id,
    )
    return problem(
        500,
        "internal-error",
        "Internal server error",
        "The server could not complete the request; nothing was changed.",
        instance=request.url.path,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PortalError, _portal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def problem_catalogue() -> dict[str, str]:
    """Every stable problem type the API can answer with, for `/problems/{slug}`."""
    found: dict[str, str] = {"malformed-json": "The body is not valid JSON"}
    pending: list[type[PortalError]] = [PortalError]
    while pending:
        cls = pending.pop()
        found[cls.slug] = cls.title
        pending.extend(cls.__subclasses__())
    for status, slug in _HTTP_SLUGS.items():
        found.setdefault(slug, HTTPStatus(status).phrase)
    found["internal-error"] = "Internal server error"
    return found
