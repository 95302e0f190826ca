"""Every route declares who may call it, and every non-public route refuses anonymous callers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from app.actor import Role
from app.main import create_app
from app.security import require_roles

BODY_METHODS = {"POST", "PUT", "PATCH"}


def _declared_roles(dependant: Dependant) -> Iterator[frozenset[str]]:
    for dependency in dependant.dependencies:
        roles = getattr(dependency.call, "__portal_roles__", None)
        if roles is not None:
            yield roles
        yield from _declared_roles(dependency)


@dataclass(frozen=True)
class Route:
    """One API route as the app serves it (router prefixes and dependencies applied)."""

    path: str
    methods: frozenset[str]
    dependant: Dependant

    @property
    def roles(self) -> list[frozenset[str]]:
        return list(_declared_roles(self.dependant))

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(method, self.path) for method in sorted(self.methods)]


def api_routes(app: FastAPI) -> list[Route]:
    found = []
    for rc in iter_route_contexts(app.routes):
        if not isinstance(rc.original_route, APIRoute):
            continue
        # The effective dependant carries dependencies added by `include_router(...)` too.
        dependant = getattr(rc, "dependant", None) or rc.original_route.dependant
        # `{user_id:uuid}` is `{user_id}` in the OpenAPI document.
        path = re.sub(r"{(\w+):\w+}", r"{\1}", str(rc.path))
        found.append(Route(path, frozenset(rc.methods or ()), dependant))
    return found


@pytest.fixture(scope="module")
def routes() -> list[Route]:
    found = api_routes(create_app())
    assert len(found) >= 15, "the route walk found suspiciously few routes"
    return found


def test_every_route_declares_its_roles(routes: list[Route]) -> None:
    undeclared = [key for route in routes if not route.roles for key in route.keys]
    assert not undeclared, f"routes without require_roles(...) or public_route: {undeclared}"


def test_no_route_mixes_public_and_role_checks(routes: list[Route]) -> None:
    mixed = [
        key
        for route in routes
        if frozenset() in route.roles and any(route.roles)
        for key in route.keys
    ]
    assert not mixed, f"routes marked public that also check roles: {mixed}"


def test_only_the_expected_routes_are_public(routes: list[Route]) -> None:
    public = sorted(key for route in routes if route.roles == [frozenset()] for key in route.keys)
    assert public == sorted(
        [
            ("GET", "/healthz"),
            ("GET", "/problems/{slug}"),
            # Stripe authenticates by signature; patients by their checkout link and cookie.
            ("POST", "/api/v1/payments/webhook"),
            ("GET", "/api/v1/public/products"),
            ("POST", "/api/v1/public/orders"),
            ("GET", "/pay/{token}"),
            ("GET", "/pay"),
            ("POST", "/pay/verify"),
            ("GET", "/orders/status"),
            # The patient's storefront (app/shop): the catalog, a cart of ids, the self-order
            # form; "my orders" by an e-mailed link and its cookie.
            ("GET", "/"),
            ("GET", "/shop"),
            ("POST", "/shop/cart"),
            ("GET", "/shop/cart"),
            ("POST", "/shop/cart/update"),
            ("GET", "/shop/details"),
            ("POST", "/shop/details"),
            ("GET", "/shop/privacy"),
            ("GET", "/my-orders"),
            ("POST", "/my-orders"),
            ("GET", "/my-orders/list"),
            ("GET", "/my-orders/{token}"),
            # Swagger UI (the document it shows is public too, at /openapi.json).
            ("GET", "/docs"),
            ("GET", "/docs/oauth2-redirect"),
        ]
    )


ADMIN = frozenset({Role.ADMIN})
STAFF = frozenset({Role.ADMIN, Role.DOCTOR})
# Routes whose audience is a security decision: a change here must be deliberate.
EXPECTED_ROLES = {
    ("GET", "/api/v1/users/me"): STAFF,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("PATCH", "/api/v1/users/{user_id}"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/api/v1/audit/verification"): ADMIN,
    ("GET", "/api/v1/products"): STAFF,
    ("POST", "/api/v1/products"): ADMIN,
    ("PATCH", "/api/v1/products/{product_id}"): ADMIN,
    ("DELETE", "/api/v1/products/{product_id}"): ADMIN,
    ("POST", "/api/v1/products/{product_id}/lots"): ADMIN,
    ("POST", "/api/v1/lots/{lot_id}/status"): ADMIN,
    ("POST", "/api/v1/lots/{lot_id}/adjustments"): ADMIN,
    ("GET", "/api/v1/alerts"): ADMIN,
    ("GET", "/api/v1/users/me/alert-subscriptions"): STAFF,
    ("PUT", "/api/v1/users/me/alert-subscriptions"): STAFF,
    ("GET", "/api/v1/payments/reconciliation/exceptions"): ADMIN,
    ("POST", "/api/v1/payments/reconciliation/exceptions/{exception_id}/resolve"): ADMIN,
    ("GET", "/api/v1/payments/reconciliation/runs"): ADMIN,
    ("POST", "/api/v1/payments/reconciliation/runs"): ADMIN,
    ("GET", "/api/v1/pharmacies"): ADMIN,
    ("POST", "/api/v1/pharmacies"): ADMIN,
    ("GET", "/api/v1/pharmacies/{pharmacy_id}"): ADMIN,
    ("PATCH", "/api/v1/pharmacies/{pharmacy_id}"): ADMIN,
    ("DELETE", "/api/v1/pharmacies/{pharmacy_id}"): ADMIN,
    ("POST", "/api/v1/pharmacies/{pharmacy_id}/test-connection"): ADMIN,
    ("GET", "/api/v1/pharmacy-submissions"): ADMIN,
    ("GET", "/api/v1/pharmacy-submissions/{submission_id}"): ADMIN,
    ("POST", "/api/v1/pharmacy-submissions/{submission_id}/resend"): ADMIN,
    ("GET", "/api/v1/pharmacy-submissions/{submission_id}/logs"): ADMIN,
}


def test_security_relevant_routes_keep_their_roles(routes: list[Route]) -> None:
    actual = {key: route.roles for route in routes for key in route.keys}
    wrong = {
        key: actual.get(key) for key, roles in EXPECTED_ROLES.items() if actual.get(key) != [roles]
    }
    assert not wrong, f"routes whose roles changed (or that vanished): {wrong}"


def test_the_walk_sees_role_markers() -> None:
    """The check above must be able to fail: a route without a marker is reported."""
    app = FastAPI()

    @app.get("/unguarded")
    def unguarded() -> dict[str, str]:
        return {}

    (route,) = api_routes(app)
    assert route.roles == []


def test_the_walk_sees_roles_added_by_include_router() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/guarded")
    def guarded() -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/x", dependencies=[Depends(require_roles(Role.ADMIN))])
    (route,) = api_routes(app)
    assert route.keys == [("GET", "/x/guarded")]
    assert route.roles == [frozenset({Role.ADMIN})]


def _protected_operations(client: TestClient, routes: list[Route]) -> list[tuple[str, str]]:
    public = {key for route in routes if route.roles == [frozenset()] for key in route.keys}
    document: dict[str, Any] = client.get("/openapi.json").json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    ]
    assert operations, "the OpenAPI document lists no operations"
    # No protected route hides from this check by leaving the schema (the patient's HTML pages,
    # all public, are the only routes outside it).
    served = {key for route in routes for key in route.keys}
    assert set(operations) <= served
    hidden = served - set(operations)
    assert hidden <= public, f"protected routes missing from the OpenAPI document: {hidden}"
    return [op for op in operations if op not in public]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def test_every_protected_route_refuses_anonymous_callers(
    client: TestClient, routes: list[Route]
) -> None:
    failures = []
    operations = _protected_operations(client, routes)
    for method, path in operations:
        kwargs: dict[str, Any] = {"json": {}} if method in BODY_METHODS else {}
        response = client.request(method, _concrete(path), **kwargs)
        if response.status_code != 401 or not response.headers.get(
            "www-authenticate", ""
        ).startswith("Bearer"):
            failures.append((method, path, response.status_code))
    assert not failures, f"reachable without a token: {failures}"
    assert len(operations) >= 15


def test_admin_only_routes_refuse_doctors(
    client: TestClient, routes: list[Route], doctor: dict[str, str]
) -> None:
    admin_only = [
        key
        for route in routes
        for roles in route.roles
        if roles and Role.DOCTOR not in roles
        for key in route.keys
    ]
    assert admin_only, "expected some admin-only routes"
    failures = []
    for method, path in admin_only:
        kwargs: dict[str, Any] = {"json": {}} if method in BODY_METHODS else {}
        response = client.request(method, _concrete(path), headers=doctor, **kwargs)
        if response.status_code != 403:
            failures.append((method, path, response.status_code))
    assert not failures, f"admin-only routes a doctor reached: {failures}"


def test_public_routes_answer_without_a_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/problems/not-authenticated").status_code == 200
