"""The reference pharmacy: a small FHIR R4 server for development and tests (never production).

    python -m devtools.pharmacy --port 8700

Loopback only, state in memory. It accepts transaction Bundles of MedicationRequests
(validated with fhir.resources and the project's value-set checks, conditional creates
de-duplicated by identifier), dispenses each request a configurable delay after accepting it
(MedicationDispense searchable by prescription), lets a request be cancelled by a status change
until it is dispensed, and answers errors as OperationOutcome. A small vendor JSON API
(`/vendor/orders`) serves the `vendor_json` connector.

Control API for tests (no authentication, loopback only):
  POST /_control/faults    {"error_rate", "timeout_rate", "timeout_seconds", "slow_seconds",
                            "down", "seed"}
  POST /_control/settings  {"dispense_delay_seconds", "api_key_header", "api_key",
                            "oauth_clients": {id: secret}, "token_lifetime_seconds",
                            "max_quantity"}
  GET  /_control/stats     counts (distinct accepted requests, duplicates, faults ...)
  POST /_control/reset     forget everything
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connectors.fhir_checks import (
    NDC_SYSTEM,
    bundle_problems,
    medication_request_problems,
    operation_outcome,
)

FHIR_JSON = "application/fhir+json"
DEFAULT_PORT = 8700
_NDC = re.compile(r"^(\d{4}-\d{4}-\d{2}|\d{5}-\d{3}-\d{2}|\d{5}-\d{4}-\d{1,2}|\d{10,11})$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    slow_seconds: float = 0.0
    down: bool = False


@dataclass
class Settings:
    dispense_delay_seconds: float | None = 2.0
    api_key_header: str = "X-API-Key"
    api_key: str | None = None
    oauth_clients: dict[str, str] = field(default_factory=dict)
    token_lifetime_seconds: int = 3600
    max_quantity: int = 1000


@dataclass
class Record:
    resource: dict[str, Any]
    accepted_at: float
    dispense_id: str | None = None


class Pharmacy:
    """All state, behind one lock (handlers may be called from several threads in tests)."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.lock = threading.RLock()
        self.random = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults()
            self.settings = Settings()
            self.requests: dict[str, Record] = {}
            self.by_identifier: dict[str, str] = {}
            self.dispenses: dict[str, dict[str, Any]] = {}
            self.tokens: dict[str, float] = {}
            self.vendor_orders: dict[str, dict[str, Any]] = {}
            self.vendor_by_key: dict[str, str] = {}
            self.stats: dict[str, int] = {
                "transactions": 0,
                "duplicates": 0,
                "rejected": 0,
                "faults_5xx": 0,
                "faults_timeout": 0,
                "faults_down": 0,
                "cancelled": 0,
                "vendor_duplicates": 0,
                "tokens_issued": 0,
                "unauthorized": 0,
            }

    # -- dispensing (evaluated lazily whenever state is read) ------------------------------

    def dispense_due(self) -> None:
        delay = self.settings.dispense_delay_seconds
        if delay is None or delay < 0:
            return
        now = time.time()
        for record in self.requests.values():
            resource = record.resource
            if resource["status"] != "active" or now < record.accepted_at + delay:
                continue
            dispense_id = f"md-{resource['id']}"
            quantity = resource.get("dispenseRequest", {}).get("quantity", {"value": 1})
            self.dispenses[dispense_id] = {
                "resourceType": "MedicationDispense",
                "id": dispense_id,
                "status": "completed",
                "medicationCodeableConcept": resource["medicationCodeableConcept"],
                "subject": {"identifier": resource["contained"][0]["identifier"][0]}
                if resource.get("contained")
                else resource.get("subject"),
                "authorizingPrescription": [{"reference": f"MedicationRequest/{resource['id']}"}],
                "quantity": quantity,
                "whenHandedOver": _now_iso(),
            }
            resource["status"] = "completed"
            _bump_version(resource)
            record.dispense_id = dispense_id
        for order in self.vendor_orders.values():
            if order["state"] == "received" and now >= order["_accepted_at"] + delay:
                order["state"] = "filled"
                order["filled_at"] = _now_iso()

    def stats_snapshot(self) -> dict[str, Any]:
        with self.lock:
            self.dispense_due()
            return {
                **self.stats,
                "distinct_requests": len(self.requests),
                "dispensed": len(self.dispenses),
                "vendor_orders": len(self.vendor_orders),
            }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _bump_version(resource: dict[str, Any]) -> None:
    meta = resource.setdefault("meta", {})
    meta["versionId"] = str(int(meta.get("versionId", "0")) + 1)
    meta["lastUpdated"] = _now_iso()


def fhir(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, separators=(",", ":")), content_type=FHIR_JSON
    )


def outcome(
    status: int, code: str, diagnostics: str, expression: list[str] | None = None
) -> web.Response:
    return fhir(operation_outcome(code, diagnostics, expression=expression or ()), status)


def searchset(resources: list[dict[str, Any]]) -> web.Response:
    return fhir(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(resources),
            "entry": [
                {
                    "fullUrl": f"{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in resources
            ],
        }
    )


# -- middlewares -------------------------------------------------------------------------------


def _is_control(request: web.Request) -> bool:
    return request.path.startswith("/_control/")


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_control(request):
        return await handler(request)
    pharmacy: Pharmacy = request.app["pharmacy"]
    with pharmacy.lock:
        faults = pharmacy.faults
        roll = pharmacy.random.random()
        down = faults.down
        if down:
            pharmacy.stats["faults_down"] += 1
        elif roll < faults.error_rate:
            pharmacy.stats["faults_5xx"] += 1
        elif roll < faults.error_rate + faults.timeout_rate:
            pharmacy.stats["faults_timeout"] += 1
        slow = faults.slow_seconds
        wait = faults.timeout_seconds
    if down:  # no answer at all: the connection is dropped
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable()
    if slow:
        await asyncio.sleep(slow)
    if roll < faults.error_rate:
        status = pharmacy.random.choice((500, 502, 503))
        return outcome(status, "transient", "the pharmacy system is temporarily unavailable")
    if roll < faults.error_rate + faults.timeout_rate:
        # Half the timeouts lose the answer after the work was done (the hard case for
        # de-duplication), half before.
        if roll < faults.error_rate + faults.timeout_rate / 2:
            response = await handler(request)
            await asyncio.sleep(wait)
            return response
        await asyncio.sleep(wait)
        return outcome(504, "timeout", "the pharmacy took too long")
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_control(request) or request.path in ("/metadata", "/oauth/token"):
        return await handler(request)
    pharmacy: Pharmacy = request.app["pharmacy"]
    with pharmacy.lock:
        settings = pharmacy.settings
        ok = True
        if settings.api_key is not None:
            given = request.headers.get(settings.api_key_header, "")
            ok = secrets.compare_digest(given.encode(), settings.api_key.encode())
        if ok and settings.oauth_clients:
            header = request.headers.get("Authorization", "")
            token = header[7:] if header.startswith("Bearer ") else ""
            ok = pharmacy.tokens.get(token, 0.0) > time.time()
        if not ok:
            pharmacy.stats["unauthorized"] += 1
    if not ok:
        return outcome(401, "login", "authentication required")
    return await handler(request)


# -- FHIR ------------------------------------------------------------------------------------


async def metadata(request: web.Request) -> web.Response:
    return fhir(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "software": {"name": "reference pharmacy (development stand-in)"},
            "rest": [
                {
                    "mode": "server",
                    "interaction": [{"code": "transaction"}],
                    "resource": [
                        {
                            "type": "MedicationRequest",
                            "interaction": [
                                {"code": "read"},
                                {"code": "update"},
                                {"code": "search-type"},
                            ],
                            "conditionalCreate": True,
                            "searchParam": [
                                {"name": "_id", "type": "token"},
                                {"name": "identifier", "type": "token"},
                                {"name": "group-identifier", "type": "token"},
                            ],
                        },
                        {
                            "type": "MedicationDispense",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [{"name": "prescription", "type": "reference"}],
                        },
                    ],
                }
            ],
        }
    )


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if len(raw) > 2_000_000:
        raise ValueError("the request is too large")
    return json.loads(raw)


def _business_problems(resource: dict[str, Any], settings: Settings) -> list[tuple[str, str, str]]:
    """(code, diagnostics, expression) refusals of a valid MedicationRequest."""
    found: list[tuple[str, str, str]] = []
    quantity = resource.get("dispenseRequest", {}).get("quantity", {}).get("value")
    if not isinstance(quantity, int | float) or quantity <= 0:
        found.append(
            (
                "required",
                "a positive dispense quantity is required",
                "MedicationRequest.dispenseRequest.quantity",
            )
        )
    elif quantity > settings.max_quantity:
        found.append(
            (
                "business-rule",
                f"quantity {quantity:g} exceeds the pharmacy's limit of {settings.max_quantity}",
                "MedicationRequest.dispenseRequest.quantity",
            )
        )
    for coding in resource.get("medicationCodeableConcept", {}).get("coding", []):
        if coding.get("system") == NDC_SYSTEM and not _NDC.match(str(coding.get("code", ""))):
            found.append(
                (
                    "code-invalid",
                    f"unknown NDC code {coding.get('code')!r}",
                    "MedicationRequest.medicationCodeableConcept.coding",
                )
            )
    contained = [r for r in resource.get("contained", []) if r.get("resourceType") == "Patient"]
    if not contained and not str(resource.get("subject", {}).get("reference", "")).startswith(
        "Patient/"
    ):
        found.append(("required", "the patient is required", "MedicationRequest.subject"))
    return found


async def transaction(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    try:
        bundle = await _json_body(request)
    except ValueError as error:
        return outcome(400, "structure", f"the body is not JSON: {error}")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return outcome(400, "structure", "a transaction Bundle is expected")
    if bundle.get("type") != "transaction":
        return outcome(
            400,
            "invalid",
            f"Bundle.type {bundle.get('type')!r} is not transaction",
            ["Bundle.type"],
        )
    problems = bundle_problems(bundle, expected_type="transaction")
    if problems:
        with pharmacy.lock:
            pharmacy.stats["rejected"] += 1
        return outcome(400, "invalid", "; ".join(problems[:5]))
    entries = bundle.get("entry") or []
    if not entries:
        return outcome(400, "required", "the Bundle has no entries", ["Bundle.entry"])
    keys: list[str] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") or {}
        req = entry.get("request") or {}
        where = f"Bundle.entry[{index}]"
        if resource.get("resourceType") != "MedicationRequest" or req.get("method") != "POST":
            return outcome(
                422, "not-supported", "only POST of MedicationRequest is supported", [where]
            )
        identifiers = resource.get("identifier") or []
        match = re.fullmatch(r"identifier=([^|]+)\|(.+)", str(req.get("ifNoneExist", "")))
        if not match or {"system": match.group(1), "value": match.group(2)} not in [
            {"system": i.get("system"), "value": i.get("value")} for i in identifiers
        ]:
            return outcome(
                422,
                "business-rule",
                "ifNoneExist must name the request's own identifier",
                [f"{where}.request.ifNoneExist"],
            )
        if resource.get("status") != "active" or resource.get("intent") != "order":
            return outcome(
                422,
                "business-rule",
                "only active orders are accepted",
                [f"{where}.resource.status"],
            )
        refusals = _business_problems(resource, pharmacy.settings)
        if refusals:
            with pharmacy.lock:
                pharmacy.stats["rejected"] += 1
            return fhir(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": code,
                            "diagnostics": text,
                            "expression": [f"{where}.resource: {path}"],
                        }
                        for code, text, path in refusals
                    ],
                },
                422,
            )
        keys.append(f"{match.group(1)}|{match.group(2)}")
    if len(set(keys)) != len(keys):
        return outcome(400, "duplicate", "the Bundle names one identifier twice")
    answers = []
    with pharmacy.lock:
        pharmacy.stats["transactions"] += 1
        pharmacy.dispense_due()
        for entry, key in zip(entries, keys, strict=True):
            existing = pharmacy.by_identifier.get(key)
            if existing is not None:
                pharmacy.stats["duplicates"] += 1
                resource = pharmacy.requests[existing].resource
                status = "200 OK"
            else:
                resource = json.loads(json.dumps(entry["resource"]))
                resource["id"] = secrets.token_hex(8)
                _bump_version(resource)
                pharmacy.requests[resource["id"]] = Record(resource, time.time())
                pharmacy.by_identifier[key] = resource["id"]
                status = "201 Created"
            answers.append(
                {
                    "fullUrl": f"MedicationRequest/{resource['id']}",
                    "resource": resource,
                    "response": {
                        "status": status,
                        "location": (
                            f"MedicationRequest/{resource['id']}"
                            f"/_history/{resource['meta']['versionId']}"
                        ),
                        "etag": f'W/"{resource["meta"]["versionId"]}"',
                    },
                }
            )
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        text = json.dumps(body, separators=(",", ":"))
    return web.Response(status=200, text=text, content_type=FHIR_JSON)


def _tokens(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _group_key(resource: dict[str, Any]) -> str:
    group = resource.get("groupIdentifier") or {}
    return f"{group.get('system')}|{group.get('value')}"


async def search_requests(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    query = request.query
    with pharmacy.lock:
        pharmacy.dispense_due()
        found = list(pharmacy.requests.values())
        if "_id" in query:
            ids = set(_tokens(query["_id"]))
            found = [r for r in found if r.resource["id"] in ids]
        if "identifier" in query:
            keys = set(_tokens(query["identifier"]))
            found = [
                r
                for r in found
                if any(
                    f"{i['system']}|{i['value']}" in keys for i in r.resource.get("identifier", [])
                )
            ]
        if "group-identifier" in query:
            keys = set(_tokens(query["group-identifier"]))
            found = [r for r in found if _group_key(r.resource) in keys]
        resources = json.loads(json.dumps([r.resource for r in found[:1000]]))
    return searchset(resources)


async def read_request(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    with pharmacy.lock:
        pharmacy.dispense_due()
        record = pharmacy.requests.get(request.match_info["id"])
        resource = json.loads(json.dumps(record.resource)) if record else None
    if resource is None:
        return outcome(
            404, "not-found", f"MedicationRequest/{request.match_info['id']} is not known"
        )
    return fhir(resource)


async def update_request(request: web.Request) -> web.Response:
    """Only a status change to `cancelled` is accepted, and only before dispensing."""
    pharmacy: Pharmacy = request.app["pharmacy"]
    resource_id = request.match_info["id"]
    try:
        body = await _json_body(request)
    except ValueError as error:
        return outcome(400, "structure", f"the body is not JSON: {error}")
    if not isinstance(body, dict):
        return outcome(400, "structure", "a MedicationRequest is expected")
    problems = medication_request_problems(body)
    if problems:
        return outcome(400, "invalid", "; ".join(problems[:5]))
    if body.get("id") != resource_id:
        return outcome(
            400, "invalid", "the resource id does not match the URL", ["MedicationRequest.id"]
        )
    with pharmacy.lock:
        pharmacy.dispense_due()
        record = pharmacy.requests.get(resource_id)
        if record is None:
            return outcome(404, "not-found", f"MedicationRequest/{resource_id} is not known")
        current = record.resource
        if body.get("status") == current["status"]:
            return fhir(json.loads(json.dumps(current)))
        if body.get("status") != "cancelled":
            return outcome(
                422,
                "business-rule",
                "only a change of status to cancelled is accepted",
                ["MedicationRequest.status"],
            )
        if current["status"] == "completed" or record.dispense_id is not None:
            return outcome(
                409,
                "business-rule",
                "the prescription has already been dispensed",
                ["MedicationRequest.status"],
            )
        current["status"] = "cancelled"
        _bump_version(current)
        pharmacy.stats["cancelled"] += 1
        answer = json.loads(json.dumps(current))
    return fhir(answer)


async def search_dispenses(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    wanted = set(_tokens(request.query.get("prescription", "")))
    with pharmacy.lock:
        pharmacy.dispense_due()
        found = [
            d
            for d in pharmacy.dispenses.values()
            if not wanted or any(p["reference"] in wanted for p in d["authorizingPrescription"])
        ]
        resources = json.loads(json.dumps(found[:1000]))
    return searchset(resources)


# -- OAuth2 client credentials ---------------------------------------------------------------


async def token(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    form = await request.post()
    client_id = str(form.get("client_id", ""))
    client_secret = str(form.get("client_secret", ""))
    with pharmacy.lock:
        expected = pharmacy.settings.oauth_clients.get(client_id)
        lifetime = pharmacy.settings.token_lifetime_seconds
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if expected is None or not secrets.compare_digest(
            expected.encode(), client_secret.encode()
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        value = secrets.token_urlsafe(24)
        pharmacy.tokens[value] = time.time() + lifetime
        pharmacy.stats["tokens_issued"] += 1
    return web.json_response(
        {"access_token": value, "token_type": "Bearer", "expires_in": lifetime}
    )


# -- vendor JSON API -------------------------------------------------------------------------


def _vendor_view(order: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in order.items() if not key.startswith("_")}


async def vendor_create(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    key = request.headers.get("Idempotency-Key", "")
    if not key or len(key) > 200:
        return web.json_response(
            {"error": {"code": "missing_key", "message": "Idempotency-Key is required"}}, status=400
        )
    try:
        body = await _json_body(request)
    except ValueError:
        return web.json_response(
            {"error": {"code": "bad_json", "message": "the body is not JSON"}}, status=400
        )
    if not isinstance(body, dict) or not body:
        return web.json_response(
            {"error": {"code": "bad_order", "message": "an order object is expected"}}, status=422
        )
    with pharmacy.lock:
        pharmacy.dispense_due()
        existing = pharmacy.vendor_by_key.get(key)
        if existing is not None:
            pharmacy.stats["vendor_duplicates"] += 1
            return web.json_response(_vendor_view(pharmacy.vendor_orders[existing]), status=200)
        order_id = f"vo-{secrets.token_hex(6)}"
        order = {"id": order_id, "state": "received", "order": body, "_accepted_at": time.time()}
        pharmacy.vendor_orders[order_id] = order
        pharmacy.vendor_by_key[key] = order_id
        return web.json_response(_vendor_view(order), status=201)


async def vendor_read(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    with pharmacy.lock:
        pharmacy.dispense_due()
        order = pharmacy.vendor_orders.get(request.match_info["id"])
        view = _vendor_view(order) if order else None
    if view is None:
        return web.json_response(
            {"error": {"code": "not_found", "message": "no such order"}}, status=404
        )
    return web.json_response(view)


async def vendor_cancel(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    with pharmacy.lock:
        pharmacy.dispense_due()
        order = pharmacy.vendor_orders.get(request.match_info["id"])
        if order is None:
            return web.json_response(
                {"error": {"code": "not_found", "message": "no such order"}}, status=404
            )
        if order["state"] == "filled":
            return web.json_response(
                {"error": {"code": "already_filled", "message": "the order was filled"}}, status=409
            )
        order["state"] = "cancelled"
        return web.json_response(_vendor_view(order))


async def vendor_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


# -- control API -----------------------------------------------------------------------------


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if (
        value is None
        or isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
    ):
        raise web.HTTPBadRequest(text=f"{key} must be a number from {low} to {high}")
    return float(value)


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await _json_body(request)
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON object is expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object is expected")
    return body


async def control_faults(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    body = await _control_body(request)
    with pharmacy.lock:
        current = pharmacy.faults
        faults = Faults(
            error_rate=_number(body, "error_rate", current.error_rate, 0, 1),
            timeout_rate=_number(body, "timeout_rate", current.timeout_rate, 0, 1),
            timeout_seconds=_number(body, "timeout_seconds", current.timeout_seconds, 0, 600),
            slow_seconds=_number(body, "slow_seconds", current.slow_seconds, 0, 600),
            down=bool(body.get("down", current.down)),
        )
        if faults.error_rate + faults.timeout_rate > 1:
            raise web.HTTPBadRequest(text="error_rate + timeout_rate must not exceed 1")
        pharmacy.faults = faults
        if "seed" in body:
            pharmacy.random.seed(body["seed"])
        return web.json_response(faults.__dict__)


async def control_settings(request: web.Request) -> web.Response:
    pharmacy: Pharmacy = request.app["pharmacy"]
    body = await _control_body(request)
    with pharmacy.lock:
        settings = pharmacy.settings
        if "dispense_delay_seconds" in body:
            delay = body["dispense_delay_seconds"]
            settings.dispense_delay_seconds = (
                None if delay is None else _number(body, "dispense_delay_seconds", 0, 0, 86400)
            )
        if "api_key_header" in body:
            settings.api_key_header = str(body["api_key_header"])
        if "api_key" in body:
            settings.api_key = None if body["api_key"] is None else str(body["api_key"])
        if "oauth_clients" in body:
            clients = body["oauth_clients"] or {}
            if not isinstance(clients, dict):
                raise web.HTTPBadRequest(text="oauth_clients must be an object")
            settings.oauth_clients = {str(k): str(v) for k, v in clients.items()}
        if "token_lifetime_seconds" in body:
            settings.token_lifetime_seconds = int(
                _number(body, "token_lifetime_seconds", 0, 1, 86400)
            )
        if "max_quantity" in body:
            settings.max_quantity = int(_number(body, "max_quantity", 0, 1, 10**6))
        if "revoke_tokens" in body:
            pharmacy.tokens.clear()
        return web.json_response(
            {
                "dispense_delay_seconds": settings.dispense_delay_seconds,
                "api_key_header": settings.api_key_header,
                "api_key_set": settings.api_key is not None,
                "oauth_clients": sorted(settings.oauth_clients),
                "token_lifetime_seconds": settings.token_lifetime_seconds,
                "max_quantity": settings.max_quantity,
            }
        )


async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app["pharmacy"].stats_snapshot())


async def control_reset(request: web.Request) -> web.Response:
    request.app["pharmacy"].reset()
    return web.json_response({"reset": True})


def create_app(pharmacy: Pharmacy | None = None) -> web.Application:
    app = web.Application(
        middlewares=[faults_middleware, auth_middleware], client_max_size=4_000_000
    )
    app["pharmacy"] = pharmacy or Pharmacy()
    app.router.add_get("/metadata", metadata)
    app.router.add_post("/", transaction)
    app.router.add_get("/MedicationRequest", search_requests)
    app.router.add_get("/MedicationRequest/{id}", read_request)
    app.router.add_put("/MedicationRequest/{id}", update_request)
    app.router.add_get("/MedicationDispense", search_dispenses)
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/vendor/orders", vendor_create)
    app.router.add_get("/vendor/orders/{id}", vendor_read)
    app.router.add_post("/vendor/orders/{id}/cancel", vendor_cancel)
    app.router.add_get("/vendor/health", vendor_health)
    app.router.add_post("/_control/faults", control_faults)
    app.router.add_post("/_control/settings", control_settings)
    app.router.add_get("/_control/stats", control_stats)
    app.router.add_post("/_control/reset", control_reset)
    return app


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """TLS for the server; with a client CA, a client certificate is required (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The reference pharmacy (FHIR R4, development only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--dispense-delay", type=float, default=2.0, help="seconds; negative: never"
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca", help="require client certificates signed by this CA")
    parser.add_argument("--seed", type=int, default=None, help="fault randomness seed")
    args = parser.parse_args(argv)
    pharmacy = Pharmacy(seed=args.seed)
    pharmacy.settings.dispense_delay_seconds = (
        None if args.dispense_delay < 0 else args.dispense_delay
    )
    context = (
        server_ssl_context(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    )
    # Loopback only: the reference pharmacy is a development stand-in.
    web.run_app(
        create_app(pharmacy),
        host="127.0.0.1",
        port=args.port,
        ssl_context=context,
        print=lambda *a: print(
            f"reference pharmacy on {'https' if context else 'http'}://127.0.0.1:{args.port}",
            flush=True,
        ),
        access_log=None,
    )


if __name__ == "__main__":
    main()
