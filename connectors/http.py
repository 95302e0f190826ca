"""The HTTP transport the connectors share: timeouts from the configuration, authentication
(API key header, OAuth2 client credentials, mutual TLS), every exchange handed to the recorder
with its secrets removed, and transport failures mapped to `TransientError`.

A connector calls `request()` and decides what a 4xx means for its protocol; `error_for()`
gives the default mapping (5xx, 408 and 429 are transient, other 4xx permanent).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from connectors.base import (
    ConnectorError,
    Exchange,
    PermanentError,
    PharmacyAuth,
    PharmacyConfig,
    Recorder,
    TransientError,
)

REDACTED = "[redacted]"
DEFAULT_API_KEY_HEADER = "X-API-Key"
# Headers that carry credentials whatever the configuration says.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)
# Form fields, query parameters and JSON members that are secrets wherever they appear.
_SECRET_FIELDS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "password",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "key",
        "token",
        "secret",
    }
)
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_MAX_RECORDED_BODY = 256 * 1024
# A cached token is renewed this long before it expires (or at half its life when shorter).
TOKEN_REFRESH_MARGIN_SECONDS = 30.0


def _is_secret_field(name: str) -> bool:
    return name.lower() in _SECRET_FIELDS


def _redact_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_field(str(key)) else _redact_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_json(item) for item in value]
    return value


def redact_url(url: str) -> str:
    """The URL without user information and without secret query parameters."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, REDACTED if _is_secret_field(name) else value) for name, value in pairs]
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Redactor:
    """Removes secrets from what is recorded: named headers, secret fields of form and JSON
    bodies, and any literal occurrence of a known secret value."""

    secret_headers: frozenset[str]
    secret_values: tuple[str, ...]

    def headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        cleaned: dict[str, str] = {}
        for name, value in headers:
            lowered = name.lower()
            secret = lowered in self.secret_headers or lowered in _SECRET_HEADERS
            cleaned[lowered] = REDACTED if secret else self.text(value)
        return cleaned

    def url(self, url: str) -> str:
        return self.text(redact_url(url))

    def body(self, body: bytes | str | None, content_type: str | None) -> str | None:
        if body is None:
            return None
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if not text:
            return None
        kind = (content_type or "").lower()
        if "json" in kind or text.lstrip().startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                text = json.dumps(_redact_json(json.loads(text)), separators=(",", ":"))
        elif "x-www-form-urlencoded" in kind:
            pairs = parse_qsl(text, keep_blank_values=True)
            text = urlencode(
                [(name, REDACTED if _is_secret_field(name) else value) for name, value in pairs]
            )
        text = self.text(text)
        if len(text) > _MAX_RECORDED_BODY:
            text = text[:_MAX_RECORDED_BODY] + "...[truncated]"
        return text

    def text(self, text: str) -> str:
        for secret in self.secret_values:
            if secret and secret in text:
                text = text.replace(secret, REDACTED)
        return text


def ssl_context(auth: PharmacyAuth) -> ssl.SSLContext | bool:
    """What httpx verifies the server with: the configured CA file, and for mutual TLS the
    client certificate and key."""
    if auth.kind != "mtls" and not auth.ca_file:
        return True
    context = ssl.create_default_context(cafile=auth.ca_file)
    if auth.kind == "mtls":
        if not auth.cert_file or not auth.key_file:
            raise PermanentError("mutual TLS needs a certificate file and a key file")
        try:
            context.load_cert_chain(auth.cert_file, auth.key_file)
        except (OSError, ssl.SSLError) as error:
            raise PermanentError(f"the client certificate could not be loaded: {error}") from None
    return context


def error_for(response: httpx.Response, message: str | None = None) -> ConnectorError:
    """The default mapping of an unsuccessful answer."""
    detail = message or f"HTTP {response.status_code} from {redact_url(str(response.url))}"
    if response.status_code >= 500 or response.status_code in _TRANSIENT_STATUSES:
        return TransientError(detail)
    return PermanentError(detail)


class _Token:
    def __init__(self) -> None:
        self.value: str | None = None
        self.expires_at = 0.0
        self.lock = threading.Lock()


# Tokens are shared by every transport of the same client (connectors are often built per
# call), keyed without the secret itself.
_tokens: dict[tuple[str, str, str, str], _Token] = {}
_tokens_lock = threading.Lock()


def forget_tokens() -> None:
    """Drop every cached OAuth2 token (after a pharmacy's credentials change; tests)."""
    with _tokens_lock:
        _tokens.clear()


def _shared_token(auth: PharmacyAuth) -> _Token:
    digest = hashlib.sha256((auth.client_secret or "").encode()).hexdigest()
    key = (auth.token_url or "", auth.client_id or "", auth.scope or "", digest)
    with _tokens_lock:
        return _tokens.setdefault(key, _Token())


class HttpTransport:
    """One httpx client per connector instance, safe to share between threads."""

    def __init__(
        self,
        config: PharmacyConfig,
        recorder: Recorder,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._recorder = recorder
        self._clock = clock
        auth = config.auth
        if auth.kind == "api_key" and not auth.api_key:
            raise PermanentError("API key authentication needs an API key")
        if auth.kind == "oauth2" and not (auth.token_url and auth.client_id and auth.client_secret):
            raise PermanentError("OAuth2 needs a token URL, a client id and a client secret")
        self._api_key_header = (auth.header or DEFAULT_API_KEY_HEADER) if auth.api_key else None
        self._token = _shared_token(auth) if auth.kind == "oauth2" else _Token()
        secret_headers = {self._api_key_header.lower()} if self._api_key_header else set()
        self._static_secrets = tuple(
            value for value in (auth.api_key, auth.client_secret) if value and len(value) >= 4
        )
        self._secret_headers = frozenset(secret_headers)
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_seconds),
            verify=ssl_context(auth),
            follow_redirects=False,
            headers={"User-Agent": "medical-ordering-portal-connector/1"},
        )

    # -- public --------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        """`path` joined to the configured base URL (an absolute URL is kept as it is)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.config.base_url.rstrip("/") + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with the configured authentication. Raises `TransientError` when no
        answer came (timeout, refused, reset); returns every answer, whatever its status, except
        that an OAuth2 401 fetches a new token and tries once more."""
        request_headers = dict(headers or {})
        body = content
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            request_headers.setdefault("Content-Type", "application/json")
        if self._api_key_header and self.config.auth.api_key:
            request_headers[self._api_key_header] = self.config.auth.api_key
        used = None
        if self.config.auth.kind == "oauth2":
            used = self._access_token()
            request_headers["Authorization"] = f"Bearer {used}"
        response = self._send(method, self.url(path), body, params, request_headers)
        if used is not None and response.status_code == 401:
            with self._token.lock:  # unless another call has renewed it meanwhile
                if self._token.value == used:
                    self._token.value = None
            request_headers["Authorization"] = f"Bearer {self._access_token()}"
            response = self._send(method, self.url(path), body, params, request_headers)
        return response

    # -- internals -----------------------------------------------------------------------

    def _redactor(self) -> Redactor:
        token = self._token.value
        secrets = (*self._static_secrets, token) if token else self._static_secrets
        return Redactor(self._secret_headers, tuple(s for s in secrets if s))

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> httpx.Response:
        request = self._client.build_request(
            method, url, content=body, params=params, headers=headers
        )
        started = time.perf_counter()
        try:
            response = self._client.send(request)
            response.read()
        except httpx.TimeoutException as error:
            self._record(request, None, started, f"timeout: {type(error).__name__}")
            raise TransientError(
                f"{method} {redact_url(url)} timed out after {self.config.timeout_seconds:g} s"
            ) from None
        except httpx.HTTPError as error:
            reason = f"{type(error).__name__}: {error}"
            self._record(request, None, started, reason)
            raise TransientError(
                f"{method} {redact_url(url)} failed: {self._redactor().text(reason)}"
            ) from None
        self._record(request, response, started, None)
        return response

    def _record(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        error: str | None,
    ) -> None:
        redactor = self._redactor()
        exchange = Exchange(
            method=request.method,
            url=redactor.url(str(request.url)),
            request_headers=redactor.headers(request.headers.multi_items()),
            request_body=redactor.body(request.content, request.headers.get("content-type")),
            status_code=response.status_code if response is not None else None,
            response_headers=redactor.headers(response.headers.multi_items()) if response else {},
            response_body=(
                redactor.body(response.content, response.headers.get("content-type"))
                if response is not None
                else None
            ),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            error=redactor.text(error) if error else None,
        )
        self._recorder(exchange)

    def _access_token(self) -> str:
        token = self._token
        with token.lock:
            if token.value is None or self._clock() >= token.expires_at:
                token.value, token.expires_at = self._fetch_token()
            return token.value

    def _fetch_token(self) -> tuple[str, float]:
        auth = self.config.auth
        assert auth.token_url and auth.client_id and auth.client_secret
        form = {
            "grant_type": "client_credentials",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
        }
        if auth.scope:
            form["scope"] = auth.scope
        response = self._send(
            "POST",
            auth.token_url,
            urlencode(form).encode(),
            None,
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        if response.status_code != 200:
            raise error_for(response, f"the token endpoint answered HTTP {response.status_code}")
        try:
            payload = response.json()
            value = payload["access_token"]
            lifetime = float(payload.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise PermanentError("the token endpoint's answer has no access_token") from None
        if not isinstance(value, str) or not value:
            raise PermanentError("the token endpoint's answer has no access_token")
        margin = min(TOKEN_REFRESH_MARGIN_SECONDS, lifetime / 2)
        return value, self._clock() + lifetime - margin
