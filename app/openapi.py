"""The OpenAPI document, completed with every answer an operation can give besides success.

FastAPI documents the success answer and a generic 422 in its own shape. What else a route can
answer follows from how the route is declared, so it is derived here, in one place, for every
route (a new route is covered without listing anything):
- every operation: 400 `bad-request` (a NUL character in the URL, refused by `RequestGuard`);
- the problems its dependencies declare with `errors.raises(...)`: `require_roles` gives 401,
  403 and 503; a public route gets none;
- a method with a body under the API prefix: 413 and 415 (`RequestGuard`); a JSON body: 400
  `malformed-json`;
- any parameter or body: 422 `validation-error`; a path parameter: 404 `not-found`; a `cursor`
  query parameter: 400 `invalid-cursor`;
- the domain problems the route lists with `responses=errors.problem_responses(...)`.
Every problem answer is `application/problem+json` with the `Problem` schema, each response
naming its problem types (in its description and in `x-problem-types`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from app.errors import (
    PROBLEM_BASE,
    PROBLEM_JSON,
    PROBLEM_SCHEMA_REF,
    PROBLEM_TYPES,
    ErrorClass,
    PortalError,
    problem_catalogue,
)
from app.schemas import utc_today

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": (
        "RFC 9457 problem details. Members beyond these carry the problem's particulars "
        "(e.g. `field`, `current_status`, `sku`, `requested`, `available`)."
    ),
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": "Stable problem type, `/problems/<slug>`; `GET` it for its title",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What is wrong with this request"},
        "instance": {"type": "string", "description": "The path of the request"},
        "errors": {
            "type": "array",
            "description": "`validation-error` only: each invalid field",
            "items": {
                "type": "object",
                "required": ["field", "message", "code"],
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
# FastAPI's own 422 shape, which this API never answers with.
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI, *, guarded_prefix: str, body_methods: set[str]) -> None:
    """Serve the completed document. Bounded dates (e.g. a date of birth before today) are
    documented as patterns of today's date, so the document is rebuilt when the date changes."""
    built: dict[date, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        today = utc_today()
        if today not in built:
            app.openapi_schema = None
            document = FastAPI.openapi(app)
            app.openapi_schema = None
            complete_document(app, document, guarded_prefix, body_methods)
            built.clear()
            built[today] = document
        return built[today]

    app.openapi = openapi  # type: ignore[method-assign]


def complete_document(
    app: FastAPI, document: dict[str, Any], guarded_prefix: str, body_methods: set[str]
) -> None:
    classes = _error_classes()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        # The effective dependant carries dependencies added by `include_router(...)` too.
        dependant: Dependant = getattr(context, "dependant", None) or route.dependant
        path = re.sub(r"{(\w+):\w+}", r"{\1}", str(context.path))  # `{id:uuid}` -> `{id}`
        for method in context.methods or ():
            operation = document.get("paths", {}).get(path, {}).get(method.lower())
            if operation is None:
                continue
            generic = _generic_problems(dependant, path, method, guarded_prefix, body_methods)
            _document_problems(operation.setdefault("responses", {}), generic, classes)
    _refuse_nul(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in FASTAPI_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)


# PostgreSQL text cannot hold U+0000, so the API refuses it in every string (`StrictInput`, and
# `RequestGuard` for the URL); strings with no pattern or format of their own say so here. Body
# strings are stripped of surrounding whitespace before their length is checked, so one that
# must not be empty must hold a character other than whitespace.
NO_NUL_PATTERN = "^[^\\u0000]*$"
NOT_BLANK_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def _refuse_nul(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
            blank_refused = node.get("minLength", 0) > 0
            node["pattern"] = NOT_BLANK_PATTERN if blank_refused else NO_NUL_PATTERN
        for value in node.values():
            _refuse_nul(value)
    elif isinstance(node, list):
        for value in node:
            _refuse_nul(value)


def _with_dependencies(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for dependency in dependant.dependencies:
        yield from _with_dependencies(dependency)


def _declared(dependant: Dependant) -> Iterator[ErrorClass]:
    for dependency in dependant.dependencies:
        yield from getattr(dependency.call, "__portal_problems__", ())
        yield from _declared(dependency)


def _generic_problems(
    dependant: Dependant, path: str, method: str, guarded_prefix: str, body_methods: set[str]
) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}

    def add(status: int, slug: str) -> None:
        slugs = found.setdefault(status, [])
        if slug not in slugs:
            slugs.append(slug)

    add(400, "bad-request")
    for error in _declared(dependant):
        add(error.status, error.slug)
    if method in body_methods and path.startswith(guarded_prefix):
        add(413, "payload-too-large")
        add(415, "unsupported-media-type")
    every = list(_with_dependencies(dependant))
    body = [param for each in every for param in each.body_params]
    path_params = [param for each in every for param in each.path_params]
    query_params = [param for each in every for param in each.query_params]
    others = [param for each in every for param in (*each.header_params, *each.cookie_params)]
    if body:
        add(400, "malformed-json")
    if body or path_params or query_params or others:
        add(422, "validation-error")
    if path_params:
        add(404, "not-found")
    if any(param.name == "cursor" for param in query_params):
        add(400, "invalid-cursor")
    return found


def _document_problems(
    responses: dict[str, Any], generic: dict[int, list[str]], classes: dict[str, ErrorClass]
) -> None:
    types: dict[str, list[str]] = {}
    for key, declared in responses.items():
        if PROBLEM_TYPES in declared:
            types[key] = list(declared[PROBLEM_TYPES])
    for status, slugs in generic.items():
        listed = types.setdefault(str(status), [])
        listed.extend(PROBLEM_BASE + slug for slug in slugs if PROBLEM_BASE + slug not in listed)
    titles = problem_catalogue()
    for key, uris in sorted(types.items()):
        slugs = [uri.removeprefix(PROBLEM_BASE) for uri in uris]
        described = "; ".join(
            f"`{PROBLEM_BASE}{slug}` ({titles.get(slug, slug)})" for slug in slugs
        )
        answer: dict[str, Any] = {
            "description": f"{HTTPStatus(int(key)).phrase}: {described}",
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
            PROBLEM_TYPES: uris,
        }
        headers = {
            name: {"description": meaning, "schema": {"type": "string"}}
            for slug in slugs
            if slug in classes
            for name, meaning in classes[slug].response_headers.items()
        }
        if headers:
            answer["headers"] = headers
        responses[key] = answer
    ordered = sorted(responses.items())
    responses.clear()
    responses.update(ordered)


def _error_classes() -> dict[str, ErrorClass]:
    found: dict[str, ErrorClass] = {}
    pending: list[ErrorClass] = [PortalError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.slug, cls)
        pending.extend(cls.__subclasses__())
    return found
