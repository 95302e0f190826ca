"""The patient's storefront pages: shop, cart, details, and "my orders".

Server-rendered and usable without JavaScript; only the payment page (app/checkout) runs
Stripe.js. Every form carries a token bound to the browser's form cookie (CSRF); the cart is a
signed cookie of product ids and quantities, never PHI. Placing the order takes the same path
as `POST /api/v1/public/orders` and lands on the payment page with the date of birth already
confirmed (the patient has just typed it).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Cookie, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app import http
from app.checkout import service as checkout
from app.checkout.routes import PAGE_HEADERS, templates
from app.config import get_settings
from app.db import DbSession
from app.errors import PortalError, TooManyRequests, problem
from app.models import PatientAccessLink
from app.notifications.service import InvalidRecipient
from app.ratelimit import Bucket, rate_limited
from app.security import Public
from app.shop import cookies, flows, service
from app.shop.cookies import CART_COOKIE, FORM_COOKIE, ORDERS_COOKIE, Cart
from app.shop.schemas import OrdersLinkRequest
from app.storefront.schemas import SelfOrderCreate
from app.storefront.service import public_products

router = APIRouter(tags=["patient pages"], include_in_schema=False, dependencies=[Public])

PAGE_PATHS = ("/shop", "/my-orders")
ResponseT = TypeVar("ResponseT", bound=Response)
SHOP_PAGE_SIZE = 20
CartCookie = Annotated[str | None, Cookie(alias=CART_COOKIE)]
FormCookie = Annotated[str | None, Cookie(alias=FORM_COOKIE)]
OrdersCookie = Annotated[str | None, Cookie(alias=ORDERS_COOKIE)]
CsrfField = Annotated[str, Form(max_length=128)]
FIELD_ERRORS = {
    "name": "Enter your full name.",
    "email": "Enter your e-mail address, like name@example.com.",
    "phone": "Enter your phone number, like +1 555 010 0100.",
    "date_of_birth": "Enter your date of birth: a past date, 1900 or later.",
    "consent": "Agree to the privacy notice to place your order.",
}


def is_shop_page(path: str) -> bool:
    return path == "/" or any(path == p or path.startswith(f"{p}/") for p in PAGE_PATHS)


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def _set_cookie(
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    samesite: Literal["strict", "lax"] = "strict",
    path: str = "/",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        secure=get_settings().checkout_cookie_secure,
        samesite=samesite,
        path=path,
    )


class Page:
    """What every shop page shares: the form token (a fresh form cookie when there is none)
    and the cart's count in the navigation."""

    def __init__(self, request: Request, form_cookie: str | None, cart: Cart) -> None:
        self.request = request
        valid = form_cookie is not None and 16 <= len(form_cookie) <= 64
        self.form_secret = form_cookie if valid and form_cookie else cookies.new_form_secret()
        self.new_secret = not valid
        self.cart = cart

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context = {
            "csrf_token": cookies.form_token(self.form_secret),
            "cart_count": sum(self.cart.values()),
            "site_name": "Clinic shop",
            **context,
        }
        response = templates.TemplateResponse(
            self.request, f"shop/{template}", context, status_code=status
        )
        return self._finish(response)

    def redirect(self, url: str) -> Response:
        return self._finish(RedirectResponse(url, status_code=303))

    def _finish(self, response: ResponseT) -> ResponseT:
        response.headers.update(PAGE_HEADERS)
        if self.new_secret:
            _set_cookie(response, FORM_COOKIE, self.form_secret, max_age=24 * 3600)
        return response

    def form_refused(self) -> HTMLResponse:
        """A form without the token of this browser's form cookie: nothing is done."""
        self.new_secret = True
        self.form_secret = cookies.new_form_secret()
        return self.render(
            "problem.html",
            403,
            title="Please try again",
            message="This form has expired or did not come from this site. Nothing was done."
            " Go back, reload the page and send it again.",
        )


async def too_many_requests(request: Request, exc: Exception) -> Response:
    """Over a rate limit on a shop page: a page saying when to try again (the API and the
    payment pages keep their problem document)."""
    assert isinstance(exc, TooManyRequests)
    if not is_shop_page(request.url.path):
        return problem(
            exc.status,
            exc.slug,
            exc.title,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers or None,
        )
    page = Page(request, request.cookies.get(FORM_COOKIE), {})
    response = page.render(
        "problem.html",
        429,
        title="Too many requests",
        message=f"Please wait {exc.headers['Retry-After']} seconds, then try again.",
    )
    response.headers["Retry-After"] = exc.headers["Retry-After"]
    return response


def _with_cart(response: Response, cart: Cart) -> Response:
    if cart:
        days = get_settings().shop_cart_days
        _set_cookie(
            response, CART_COOKIE, cookies.encode_cart(cart), max_age=days * 86400, samesite="lax"
        )
    else:
        response.delete_cookie(CART_COOKIE, path="/")
    return response


def _shop_page(
    page: Page,
    session: DbSession,
    q: str,
    cursor: str | None,
    *,
    status: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    search = q.strip()
    products = public_products(session, limit=SHOP_PAGE_SIZE, cursor=cursor, search=search or None)
    return page.render(
        "shop.html",
        status,
        title="Shop",
        q=search,
        error=error,
        products=[
            {
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "price": _money(p.price_cents),
                "in_stock": p.in_stock,
                "in_cart": page.cart.get(p.id, 0),
            }
            for p in products.rows
        ],
        next_cursor=products.next_cursor,
        max_quantity=cookies.MAX_QUANTITY,
    )


@router.get("/", dependencies=[rate_limited(Bucket.PUBLIC_CATALOG)])
@router.get("/shop", dependencies=[rate_limited(Bucket.PUBLIC_CATALOG)])
def shop(
    request: Request,
    session: DbSession,
    q: Annotated[str, Query(max_length=100)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    """The non-prescription catalog, with search; products out of stock cannot be added."""
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    try:
        return _shop_page(page, session, q, cursor)
    except PortalError:  # a cursor that is not one of ours: the first page
        return _shop_page(page, session, q, None)


@router.post("/shop/cart", dependencies=[rate_limited(Bucket.PUBLIC_CATALOG)])
def add_to_cart(
    request: Request,
    session: DbSession,
    csrf_token: CsrfField = "",
    product_id: Annotated[str, Form(max_length=64)] = "",
    quantity: Annotated[str, Form(max_length=8)] = "1",
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    if not cookies.form_token_valid(form_cookie, csrf_token):
        return page.form_refused()
    try:
        cart = service.add_to_cart(session, page.cart, uuid.UUID(product_id), int(quantity))
    except ValueError:
        return _shop_page(
            page, session, "", None, status=422, error="Choose a product and a quantity."
        )
    except PortalError as exc:
        return _shop_page(page, session, "", None, status=exc.status, error=_sentence(exc.detail))
    return _with_cart(page.redirect("/shop/cart"), cart)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _cart_context(session: DbSession, cart: Cart) -> dict[str, Any]:
    lines = service.cart_lines(session, cart)
    return {
        "lines": [
            {
                "product_id": line.product.id,
                "name": line.product.name,
                "quantity": line.quantity,
                "price": _money(line.product.price_cents),
                "line_total": _money(line.line_cents),
                "available": line.available,
            }
            for line in lines
        ],
        "total": _money(sum(line.line_cents for line in lines)),
        "all_available": all(line.available for line in lines),
        "max_quantity": cookies.MAX_QUANTITY,
    }


@router.get("/shop/cart")
def cart_page(
    request: Request,
    session: DbSession,
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    return page.render("cart.html", title="Your cart", **_cart_context(session, page.cart))


@router.post("/shop/cart/update")
def update_cart(
    request: Request,
    session: DbSession,
    csrf_token: CsrfField = "",
    product_id: Annotated[str, Form(max_length=64)] = "",
    quantity: Annotated[str, Form(max_length=8)] = "",
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    if not cookies.form_token_valid(form_cookie, csrf_token):
        return page.form_refused()
    try:
        cart = service.set_quantity(page.cart, uuid.UUID(product_id), int(quantity))
    except (ValueError, PortalError):
        return page.render(
            "cart.html",
            422,
            title="Your cart",
            error=f"Choose a quantity from 0 to {cookies.MAX_QUANTITY}.",
            **_cart_context(session, page.cart),
        )
    page.cart = cart
    return _with_cart(page.redirect("/shop/cart"), cart)


def _details_page(
    page: Page,
    session: DbSession,
    status: int = 200,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
) -> HTMLResponse:
    return page.render(
        "details.html",
        status,
        title="Your details" if not errors and not error else "Check your details",
        values=values or {},
        errors=errors or {},
        error=error,
        **_cart_context(session, page.cart),
    )


@router.get("/shop/details")
def details_page(
    request: Request,
    session: DbSession,
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    if not page.cart:
        return page.redirect("/shop/cart")
    return _details_page(page, session)


@router.post("/shop/details", dependencies=[rate_limited(Bucket.SELF_ORDER)])
def place_order(
    request: Request,
    session: DbSession,
    csrf_token: CsrfField = "",
    name: Annotated[str, Form(max_length=300)] = "",
    email: Annotated[str, Form(max_length=300)] = "",
    phone: Annotated[str, Form(max_length=64)] = "",
    date_of_birth: Annotated[str, Form(max_length=32)] = "",
    consent: Annotated[str, Form(max_length=8)] = "",
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    """Place the cart as a self-order for the patient's details, then the payment page."""
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    if not cookies.form_token_valid(form_cookie, csrf_token):
        return page.form_refused()
    if not page.cart:
        return page.redirect("/shop/cart")
    values = {"name": name, "email": email, "phone": phone, "date_of_birth": date_of_birth}
    errors: dict[str, str] = {}
    data: SelfOrderCreate | None = None
    try:
        data = SelfOrderCreate.model_validate_json(
            json.dumps(
                {
                    **values,
                    "items": [
                        {"product_id": str(product_id), "quantity": quantity}
                        for product_id, quantity in page.cart.items()
                    ],
                }
            )
        )
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            errors.setdefault(field if field in FIELD_ERRORS else "items", "")
        errors = {
            field: FIELD_ERRORS.get(field, "Your cart changed; review it and try again.")
            for field in errors
        }
    if consent != "yes":
        errors["consent"] = FIELD_ERRORS["consent"]
    unavailable = [line for line in service.cart_lines(session, page.cart) if not line.available]
    if unavailable and "items" not in errors:
        errors["items"] = (
            "Not enough stock left for: "
            + ", ".join(line.product.name for line in unavailable)
            + ". Change your cart and try again."
        )
    if errors or data is None:
        return _details_page(page, session, 422, values=values, errors=errors)
    client = http.client_address(request)
    try:
        _, link_id = flows.place_cart_order(session, data, client)
    except InvalidRecipient:
        return _details_page(
            page, session, 422, values=values, errors={"email": FIELD_ERRORS["email"]}
        )
    except PortalError as exc:
        return _details_page(page, session, exc.status, values=values, error=_sentence(exc.detail))
    page.cart = {}
    response = _with_cart(page.redirect("/pay"), {})
    settings = get_settings()
    _set_cookie(
        response,
        checkout.COOKIE_NAME,
        checkout.make_cookie(link_id, verified=True),
        max_age=settings.checkout_cookie_minutes * 60,
    )
    return response


@router.get("/shop/privacy")
def privacy_notice(
    request: Request, form_cookie: FormCookie = None, cart_cookie: CartCookie = None
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    return page.render("privacy.html", title="Privacy notice")


# -- my orders ----------------------------------------------------------------------------------
@router.get("/my-orders")
def my_orders_form(
    request: Request, form_cookie: FormCookie = None, cart_cookie: CartCookie = None
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    return page.render("my_orders_request.html", title="My orders", values={}, errors={})


@router.post("/my-orders", dependencies=[rate_limited(Bucket.ORDERS_LINK)])
def request_orders_link(
    request: Request,
    session: DbSession,
    csrf_token: CsrfField = "",
    email: Annotated[str, Form(max_length=300)] = "",
    date_of_birth: Annotated[str, Form(max_length=32)] = "",
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    """E-mail a "my orders" link when the e-mail and date of birth match a patient. The page
    and its timing are the same either way (at least PATIENT_ACCESS_MIN_RESPONSE_MS)."""
    started = time.monotonic()
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    if not cookies.form_token_valid(form_cookie, csrf_token):
        return page.form_refused()
    errors: dict[str, str] = {}
    answer: OrdersLinkRequest | None = None
    try:
        answer = OrdersLinkRequest.model_validate_json(
            json.dumps({"email": email, "date_of_birth": date_of_birth})
        )
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            errors[field] = FIELD_ERRORS.get(field, "Check this field.")
    if errors or answer is None:
        return page.render(
            "my_orders_request.html",
            422,
            title="Check your details",
            values={"email": email, "date_of_birth": date_of_birth},
            errors=errors,
        )
    try:
        with session.begin_nested():
            service.request_access(
                session, answer.email, answer.date_of_birth, http.client_address(request)
            )
    except InvalidRecipient:
        pass  # an address the mailer refuses: nothing is sent, and the page says the same
    floor = get_settings().patient_access_min_response_ms / 1000
    remaining = floor - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)
    return page.render("my_orders_sent.html", title="Check your e-mail")


@router.get("/my-orders/list")
def my_orders(
    request: Request,
    session: DbSession,
    orders_cookie: OrdersCookie = None,
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    opened = cookies.read_orders_cookie(orders_cookie)
    link = session.get(PatientAccessLink, opened.link_id) if opened else None
    if link is None or not service.access_link_valid(link):
        return page.render(
            "problem.html",
            401,
            title="Ask for a new link",
            message="Your link to your orders has expired or was replaced.",
            ask_again=True,
        )
    orders = service.orders_of(session, link, http.client_address(request))
    return page.render(
        "my_orders.html",
        title="My orders",
        orders=[
            {
                "reference": o.reference,
                "placed_on": o.placed_at.strftime("%d %B %Y"),
                "headline": o.status.headline,
                "explanation": o.status.explanation,
                "tone": o.status.tone,
                "lines": o.items,
                "total": _money(o.total_cents),
                "pharmacy": o.pharmacy,
            }
            for o in orders
        ],
    )


@router.get("/my-orders/{token}")
def open_orders_link(
    token: str,
    request: Request,
    session: DbSession,
    form_cookie: FormCookie = None,
    cart_cookie: CartCookie = None,
) -> Response:
    """Exchange the e-mailed link's token for a cookie; the token leaves the address bar."""
    page = Page(request, form_cookie, cookies.decode_cart(cart_cookie))
    link = service.find_access_link(session, token)
    if link is None or not service.access_link_valid(link):
        return page.render(
            "problem.html",
            404 if link is None else 410,
            title="Link not valid" if link is None else "Link expired",
            message="This link to your orders is not valid, has expired or was replaced.",
            ask_again=True,
        )
    service.mark_used(link)
    response = page.redirect("/my-orders/list")
    expires = int(min(link.expires_at.timestamp(), time.time() + 30 * 60))
    _set_cookie(
        response,
        ORDERS_COOKIE,
        cookies.make_orders_cookie(link.id, expires),
        max_age=max(1, expires - int(time.time())),
        path="/my-orders",
    )
    return response
