"""The storefront's signed cookies: the cart, the form token (CSRF) and the "my orders" session.

Each value is `body.signature`, an HMAC-SHA256 of the purpose and the body under the checkout
cookie secret, so a value made for one purpose is refused for another. None carries PHI: the
cart holds product ids and quantities, the session a link id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

from app.config import get_settings

CART_COOKIE = "portal_cart"
FORM_COOKIE = "portal_form"
ORDERS_COOKIE = "portal_orders"
# A cart holds at most this many products, each at most SelfOrderQuantity's bound.
MAX_CART_LINES = 10
MAX_QUANTITY = 10


def _mac(purpose: str, body: str) -> str:
    key = get_settings().checkout_cookie_secret.encode()
    return hmac.new(key, f"{purpose}\n{body}".encode(), hashlib.sha256).hexdigest()


def sign(purpose: str, body: str) -> str:
    return f"{body}.{_mac(purpose, body)}"


def unsign(purpose: str, value: str | None) -> str | None:
    """The body of a value signed for `purpose`, or None (missing, altered, other purpose)."""
    if not value or len(value) > 4096:
        return None
    body, _, signature = value.rpartition(".")
    if not body or not hmac.compare_digest(signature.encode(), _mac(purpose, body).encode()):
        return None
    return body


# -- the cart -----------------------------------------------------------------------------------
Cart = dict[uuid.UUID, int]


def encode_cart(cart: Cart) -> str:
    expires = int(time.time()) + get_settings().shop_cart_days * 86400
    lines = "~".join(f"{product_id}*{quantity}" for product_id, quantity in cart.items())
    return sign("cart", f"{expires}~{lines}")


def decode_cart(value: str | None) -> Cart:
    """The cart in the cookie; an altered, expired or malformed one is an empty cart."""
    body = unsign("cart", value)
    if body is None:
        return {}
    expires, _, lines = body.partition("~")
    cart: Cart = {}
    try:
        if int(expires) < time.time():
            return {}
        for line in filter(None, lines.split("~")):
            product_id, _, quantity = line.partition("*")
            cart[uuid.UUID(product_id)] = int(quantity)
    except ValueError:
        return {}
    if len(cart) > MAX_CART_LINES or any(not 1 <= q <= MAX_QUANTITY for q in cart.values()):
        return {}
    return cart


# -- the form token (CSRF) ----------------------------------------------------------------------
def new_form_secret() -> str:
    return secrets.token_urlsafe(24)


def form_token(form_secret: str) -> str:
    """The token every form of the shop carries: bound to the browser's form cookie, so a page
    of another site can neither read it nor make one that matches."""
    return _mac("form", form_secret)


def form_token_valid(form_secret: str | None, token: str | None) -> bool:
    if not form_secret or not token or len(form_secret) > 64 or len(token) > 128:
        return False
    return hmac.compare_digest(token.encode(), form_token(form_secret).encode())


# -- the "my orders" session --------------------------------------------------------------------
@dataclass(frozen=True)
class OrdersSession:
    link_id: uuid.UUID
    expires: int


def make_orders_cookie(link_id: uuid.UUID, expires: int) -> str:
    return sign("orders", f"{link_id}~{expires}")


def read_orders_cookie(value: str | None) -> OrdersSession | None:
    body = unsign("orders", value)
    if body is None:
        return None
    link_id, _, expires = body.partition("~")
    try:
        session = OrdersSession(uuid.UUID(link_id), int(expires))
    except ValueError:
        return None
    return session if session.expires > time.time() else None
