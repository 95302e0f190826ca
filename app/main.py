"""The portal's ASGI application: `create_app()` assembles middleware, routers and errors."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.alerts.routes import router as alerts_router
from app.api_docs import install_api_docs
from app.audit.routes import router as audit_router
from app.cache import TtlCache
from app.catalog.routes import router as catalog_router
from app.checkout.routes import form_too_large_page, is_patient_page
from app.checkout.routes import router as checkout_pages
from app.config import get_settings
from app.errors import install_error_handlers, problem, problem_catalogue
from app.inventory.routes import router as inventory_router
from app.logs import install_on_every_handler
from app.openapi import install_openapi
from app.orders.routes import router as orders_router
from app.outbox.routes import router as outbox_router
from app.patients.routes import router as patients_router
from app.payments.reconciliation_routes import router as reconciliation_router
from app.payments.routes import router as payments_router
from app.pharmacy.routes import router as pharmacy_router
from app.security import Public
from app.storefront.routes import router as storefront_router
from app.system_logs.routes import router as system_logs_router
from app.users.routes import router as users_router
from app.users.service import SignedInUser

API_PREFIX = "/api/v1"
BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestGuard:
    """Pure ASGI middleware: request ids, body size limits on every route (`MAX_BODY_BYTES` on
    the API, `MAX_PAGE_BODY_BYTES` elsewhere) and JSON-only bodies on the API.

    It sits outside FastAPI so an oversized or mistyped body is refused before any handler,
    dependency or database work runs.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_page_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_page_body_bytes = max_page_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        if b"%00" in scope.get("query_string", b"") or "\x00" in path:
            # PostgreSQL text cannot hold NUL: refuse it here for every parameter at once.
            await self._refuse(
                scope,
                send_with_id,
                400,
                "bad-request",
                "Bad request",
                "NUL characters are not allowed in the URL.",
            )
            return

        api = path.startswith(API_PREFIX)
        limit = self.max_body_bytes if api else self.max_page_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, send_with_id, limit)
            return
        has_body = declared not in (None, "0") or "transfer-encoding" in headers
        if api:
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if (
                scope["method"] in BODY_METHODS
                and has_body
                and not (content_type == "application/json" or content_type.endswith("+json"))
            ):
                await self._refuse(
                    scope,
                    send_with_id,
                    415,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "Send the body as JSON with `Content-Type: application/json`.",
                )
                return
            receive = self._limited(receive)
        elif has_body:
            # Pages and meta routes take at most a small form: read it here, whole, so that a
            # body too large is refused even where no handler would have read it.
            body = await self._read_at_most(receive, limit)
            if body is None:
                await self._too_large(scope, send_with_id, limit)
                return
            receive = _replay(body, receive)

        await self.app(scope, receive, send_with_id)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        return wrapped

    @staticmethod
    async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as it passes `limit` bytes (or the client left)."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        if is_patient_page(scope["path"]):
            await form_too_large_page(scope)(scope, _empty_receive, send)
            return
        await self._refuse(
            scope,
            send,
            413,
            "payload-too-large",
            "Payload too large",
            f"The body exceeds {limit} bytes.",
        )

    @staticmethod
    async def _refuse(
        scope: Scope, send: Send, status: int, slug: str, title: str, detail: str
    ) -> None:
        response = problem(status, slug, title, detail, instance=scope["path"])
        await response(scope, _empty_receive, send)


class BodyTooLarge(StarletteHTTPException):
    """A chunked body grew past the limit while it was being read.

    An HTTPException because FastAPI re-raises those from its body parsing; any other
    exception raised there is turned into a generic 400 and the handler below never runs.
    """

    def __init__(self) -> None:
        super().__init__(status_code=413)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the application the body read ahead, then whatever the server says next."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _public_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["meta"], dependencies=[Public])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/problems/{slug}", tags=["meta"], dependencies=[Public])
    def problem_type(slug: str) -> JSONResponse:
        """Documentation of each problem `type` the API answers with."""
        catalogue = problem_catalogue()
        if slug not in catalogue:
            return problem(404, "not-found", "Not found", f"no problem type {slug}")
        return JSONResponse({"type": f"/problems/{slug}", "title": catalogue[slug]})

    return router


def create_app() -> FastAPI:
    settings = get_settings()
    # However this process was started (portal serve, uvicorn, a test), its log handlers redact.
    install_on_every_handler()
    app = FastAPI(
        title="Medical ordering portal",
        version="0.1.0",
        description="Cash-pay medications and perishable supplies: catalog, lots, orders.",
        # FastAPI's pages load Swagger UI and ReDoc from a CDN; app.api_docs serves /docs.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.state.signed_in_users = TtlCache[str, SignedInUser](settings.signed_in_user_cache_seconds)

    async def body_too_large(request: object, exc: Exception) -> JSONResponse:
        return problem(
            413,
            "payload-too-large",
            "Payload too large",
            f"The body exceeds {settings.max_body_bytes} bytes.",
        )

    app.add_exception_handler(BodyTooLarge, body_too_large)

    api = APIRouter(prefix=API_PREFIX)
    for router in (
        catalog_router,
        inventory_router,
        patients_router,
        orders_router,
        payments_router,
        reconciliation_router,
        storefront_router,
        outbox_router,
        users_router,
        audit_router,
        alerts_router,
        pharmacy_router,
        system_logs_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(_public_router())
    app.include_router(checkout_pages)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_page_body_bytes=settings.max_page_body_bytes,
    )
    install_openapi(app, guarded_prefix=API_PREFIX, body_methods=BODY_METHODS)
    # After install_openapi: the docs add the issuer's sign-in to the completed document.
    install_api_docs(app, settings)
    return app
