"""The patient's pages: no account, a link, a date-of-birth check, the payment, the status."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from app import http
from app.checkout import service
from app.checkout.service import COOKIE_NAME
from app.config import get_settings
from app.db import DbSession
from app.models import CheckoutLink, Order, Patient
from app.models.status import LinkState, OrderStatus
from app.notifications.templates import order_reference
from app.patients.service import decrypt_patient
from app.ratelimit import Bucket, rate_limited
from app.security import Public

templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))
router = APIRouter(tags=["patient pages"], include_in_schema=False, dependencies=[Public])

PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
PROBLEMS: dict[LinkState, tuple[int, str, str]] = {
    LinkState.UNKNOWN: (404, "Link not found", "This payment link is not valid."),
    LinkState.EXPIRED: (410, "Link expired", "This payment link has expired."),
    LinkState.REVOKED: (410, "Link replaced", "This payment link was replaced or withdrawn."),
    LinkState.LOCKED: (
        423,
        "Link locked",
        "This payment link is locked after too many unsuccessful date-of-birth checks.",
    ),
}
CookieValue = Annotated[str | None, Cookie(alias=COOKIE_NAME)]
# The patient's pages: refusals there are pages too, not problem documents.
PAGE_PATHS = ("/pay", "/orders/status")


def is_patient_page(path: str) -> bool:
    return any(path == p or path.startswith(f"{p}/") for p in PAGE_PATHS)


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, f"checkout/{template}", context, status_code=status
    )
    response.headers.update(PAGE_HEADERS)
    return response


def form_too_large_page(scope: Scope) -> HTMLResponse:
    """The page for a form body over MAX_PAGE_BODY_BYTES (sent by the request guard)."""
    return _page(
        Request(scope),
        "form_too_large.html",
        413,
        title="Form too large",
        message="What was sent is far larger than this form. Please go back and try again.",
    )


def _problem_page(request: Request, state: LinkState) -> HTMLResponse:
    status, title, message = PROBLEMS[state]
    return _page(request, "link_problem.html", status, title=title, message=message)


def _redirect(url: str, cookie: str | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(PAGE_HEADERS)
    if cookie is not None:
        settings = get_settings()
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=settings.checkout_cookie_minutes * 60,
            httponly=True,
            secure=settings.checkout_cookie_secure,
            samesite="strict",
            path="/",
        )
    return response


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def _session_link(
    session: DbSession, cookie: str | None
) -> tuple[service.CheckoutSession | None, CheckoutLink | None, Order | None]:
    checkout = service.read_cookie(cookie)
    if checkout is None:
        return None, None, None
    link = session.get(CheckoutLink, checkout.link_id)
    order = session.get(Order, link.order_id) if link else None
    return checkout, link, order


@router.get("/pay/{token}")
def open_link(token: str, request: Request, session: DbSession) -> Response:
    """Exchange the link's token for a cookie, then continue without the token in the URL."""
    link = service.find_by_token(session, token)
    order = session.get(Order, link.order_id) if link else None
    state = service.state_of(link, order)
    if state == LinkState.CLOSED:
        assert link is not None
        return _redirect("/orders/status", service.make_cookie(link.id, verified=False))
    if state != LinkState.VALID:
        return _problem_page(request, state)
    assert link is not None
    return _redirect("/pay", service.make_cookie(link.id, verified=False))


@router.get("/pay")
def payment_page(request: Request, session: DbSession, cookie: CookieValue = None) -> Response:
    checkout, link, order = _session_link(session, cookie)
    if checkout is None or link is None or order is None:
        return _problem_page(request, LinkState.UNKNOWN)
    state = service.state_of(link, order)
    if state == LinkState.CLOSED:
        return _redirect("/orders/status")
    if state != LinkState.VALID:
        return _problem_page(request, state)
    if not checkout.verified:
        return _page(request, "verify.html", title="Confirm it is you", error=None)
    patient = session.get(Patient, order.patient_id)
    assert patient is not None
    rows = service.order_lines(session, order)
    settings = get_settings()
    client = http.client_address(request)
    service.record_details_viewed(session, link, order, client)
    return _page(
        request,
        "pay.html",
        title="Pay for your order",
        reference=order_reference(order.id),
        items=[
            {
                "name": name,
                "quantity": item.quantity,
                "line_total": _money(item.quantity * item.unit_price_cents),
            }
            for item, name in rows
        ],
        total=_money(order.total_cents),
        patient=decrypt_patient(patient),
        stripe_js_url=settings.stripe_js_url,
        publishable_key=settings.stripe_publishable_key,
        checkout_ui=settings.stripe_checkout_ui,
        total_cents=order.total_cents,
        currency=order.currency.lower(),
        payment_method_types=list(settings.stripe_payment_method_types),
    )


@router.post("/pay/verify", dependencies=[rate_limited(Bucket.DOB_CHECK)])
def verify(
    request: Request,
    session: DbSession,
    date_of_birth: Annotated[str, Form(max_length=32)] = "",
    cookie: CookieValue = None,
) -> Response:
    checkout, link, order = _session_link(session, cookie)
    if checkout is None or link is None or order is None:
        return _problem_page(request, LinkState.UNKNOWN)
    state = service.state_of(link, order)
    if state != LinkState.VALID:
        return _problem_page(request, state) if state in PROBLEMS else _redirect("/orders/status")
    try:
        answer = date.fromisoformat(date_of_birth)
    except ValueError:
        return _page(
            request,
            "verify.html",
            422,
            title="Confirm it is you",
            error="Enter your date of birth as year, month and day.",
        )
    client = http.client_address(request)
    if service.check_date_of_birth(session, link, answer, client):
        return _redirect("/pay", service.make_cookie(link.id, verified=True))
    if link.locked_at is not None:
        return _problem_page(request, LinkState.LOCKED)
    left = get_settings().checkout_max_failed_attempts - link.failed_attempts
    return _page(
        request,
        "verify.html",
        422,
        title="Confirm it is you",
        error=f"That date of birth does not match our records. {left} attempt(s) left.",
    )


@router.get("/orders/status")
def order_status(request: Request, session: DbSession, cookie: CookieValue = None) -> Response:
    """The order's status for the patient (reachable from the confirmation e-mail's link).

    After paying on this device (the date of birth confirmed) it is the confirmation: the
    order's items, amount and what happens next. Opened from an e-mailed link on another
    device, it shows the status only."""
    checkout, link, order = _session_link(session, cookie)
    if checkout is None or link is None or order is None:
        return _problem_page(request, LinkState.UNKNOWN)
    text = service.status_text(order, service.payments_of(session, order))
    details: dict[str, Any] = {}
    if checkout.verified and link.locked_at is None:
        details = {
            "items": [
                {
                    "name": name,
                    "quantity": item.quantity,
                    "line_total": _money(item.quantity * item.unit_price_cents),
                }
                for item, name in service.order_lines(session, order)
            ],
            "total": _money(order.total_cents),
        }
        audit_client = http.client_address(request)
        service.record_order_viewed(session, link, order, audit_client)
    return _page(
        request,
        "status.html",
        title=text.headline,
        reference=order_reference(order.id),
        headline=text.headline,
        explanation=text.explanation,
        tone=text.tone,
        order_state=OrderStatus(order.status).value,
        **details,
    )
