"""The local Stripe stand-in (localstripe) for the payment tests, and Stripe-format webhooks.

localstripe is a tool the tests run in a subprocess and talk to over HTTP, exactly as the app
does; nothing here is imported by the app. Its own command listens on every interface, so it is
started on loopback only. It also writes its whole state to the fixed path
/tmp/localstripe.pickle after every change, which would overwrite the state of a developer's
`portal up` stand-in (and costs a pickle of the whole store per write); the subprocess turns
that off, so each test run starts empty and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.live_api import free_port, stop, wait_until_up

WEBHOOK_SECRET = "whsec_portal_tests_" + uuid.uuid4().hex
API_KEY = "sk_test_x"
CARD = {
    "type": "card",
    "card[number]": "4242424242424242",
    "card[exp_month]": "12",
    "card[exp_year]": "2030",
    "card[cvc]": "123",
}

_STAND_IN = (
    "import sys; import localstripe.resources as r; r.Store.dump_to_disk = lambda self: None; "
    "from localstripe.server import app; from aiohttp import web; "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


class LocalStripe:
    """A running localstripe and the Stripe-side calls the tests make to it over HTTP."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        )

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def post(self, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(path, data=data)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def intent(self, intent_id: str) -> dict[str, Any]:
        return self.get(f"/v1/payment_intents/{intent_id}")

    def pay_by_card(self, intent_id: str) -> dict[str, Any]:
        """What the patient's browser and Stripe do: attach a card, confirm -> succeeded."""
        method = self.post("/v1/payment_methods", CARD)
        self.post(f"/v1/payment_intents/{intent_id}", {"payment_method": method["id"]})
        intent = self.post(f"/v1/payment_intents/{intent_id}/confirm")
        assert intent["status"] == "succeeded", intent
        return intent

    def refunds(self, intent_id: str) -> list[dict[str, Any]]:
        refunds: list[dict[str, Any]] = self.get(
            "/v1/refunds", payment_intent=intent_id, limit=100
        )["data"]
        return refunds

    def events(self, intent_id: str, type_: str) -> list[dict[str, Any]]:
        events = self.get("/v1/events", type=type_, limit=100)["data"]
        return [e for e in events if e["data"]["object"].get("id") == intent_id]

    def register_webhook(self, url: str, secret: str = WEBHOOK_SECRET) -> None:
        """What the Stripe Dashboard's webhook endpoint setting does in production."""
        response = self.http.post("/_config/webhooks/portal", data={"url": url, "secret": secret})
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self.http.close()


@contextmanager
def _run(log_path: Path) -> Iterator[LocalStripe]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _STAND_IN, str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(
                process,
                base + "/v1/balance",
                log_path,
                timeout=30,
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            server = LocalStripe(base)
            try:
                yield server
            finally:
                server.close()
        finally:
            stop(process, timeout=10)


# One server per test session, however many conftests ask for it (tests/payments and
# tests/outbox each declare a session fixture; the last one released stops it).
_lock = threading.Lock()
_users = 0
_server: LocalStripe | None = None
_stack: Any = None


@contextmanager
def shared_server() -> Iterator[LocalStripe]:
    global _users, _server, _stack
    with _lock:
        if _server is None:
            log = Path(tempfile.mkdtemp(prefix="portal-localstripe-")) / "localstripe.log"
            _stack = _run(log)
            _server = _stack.__enter__()
        _users += 1
        server = _server
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                stack, _server, _stack = _stack, None, None
                stack.__exit__(None, None, None)


def clear_caches() -> None:
    from app.config import get_settings
    from app.integrations.stripe.client import stripe_client

    get_settings.cache_clear()
    stripe_client.cache_clear()


@contextmanager
def app_pointed_at(server: LocalStripe) -> Iterator[None]:
    """STRIPE_API_BASE and STRIPE_WEBHOOK_SECRET for the app, restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRIPE_API_BASE", server.base)
        mp.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        clear_caches()
        try:
            yield
        finally:
            clear_caches()
    clear_caches()  # once more with the environment restored


# Stripe-format events and signatures -------------------------------------------------------


def event_id() -> str:
    return "evt_" + uuid.uuid4().hex[:24]


def intent_event(type_: str, intent_id: str, *, event: str | None = None, **fields: Any) -> Any:
    status = {
        "payment_intent.succeeded": "succeeded",
        "payment_intent.processing": "processing",
        "payment_intent.payment_failed": "requires_payment_method",
        "payment_intent.canceled": "canceled",
    }.get(type_, "requires_action")
    obj: dict[str, Any] = {"id": intent_id, "object": "payment_intent", "status": status}
    if type_ == "payment_intent.payment_failed":
        obj["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
    obj.update(fields)
    return stripe_event(type_, obj, event=event)


def charge_event(type_: str, intent_id: str, *, event: str | None = None, **fields: Any) -> Any:
    obj: dict[str, Any] = {
        "id": ("dp_" if "dispute" in type_ else "ch_") + uuid.uuid4().hex[:14],
        "object": "dispute" if "dispute" in type_ else "charge",
        "payment_intent": intent_id,
    }
    obj.update(fields)
    return stripe_event(type_, obj, event=event)


def stripe_event(type_: str, obj: dict[str, Any], *, event: str | None = None) -> Any:
    return {
        "id": event or event_id(),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": type_,
        "data": {"object": obj},
    }


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2, sort_keys=True).encode()


def signature(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """`Stripe-Signature` as Stripe computes it: HMAC-SHA256 of `{t}.{payload}`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed(event: dict[str, Any], **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a webhook delivery of `event`."""
    payload = body_of(event)
    return payload, {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature(payload, **kwargs),
    }
