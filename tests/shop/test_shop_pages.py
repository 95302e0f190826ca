"""The storefront's pages in process (the browser journey is in test_shop_browser.py): the
cart in a signed cookie, CSRF tokens, validation that places nothing, and "my orders" links
that answer the same whether or not the e-mail is known."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.checkout.service import COOKIE_NAME, read_cookie
from app.config import get_settings
from app.models import (
    AuditEntry,
    Order,
    OutboxMessage,
    Patient,
    PatientAccessLink,
    PharmacySubmission,
)
from app.models.base import utcnow
from app.shop.cookies import CART_COOKIE, decode_cart
from tests.fixtures.orders import create_product, receive_lot

Headers = dict[str, str]
DETAILS = {
    "name": "Robin Shopper",
    "email": "robin.shopper@example.com",
    "phone": "+1 555 010 0142",
    "date_of_birth": "1984-03-09",
}


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def products(https: TestClient, admin: Headers) -> tuple[dict[str, Any], dict[str, Any]]:
    """One product in stock (5 units), one without stock."""
    stocked = create_product(https, admin, name="Saline nasal spray", price_cents=650)
    receive_lot(https, admin, stocked["id"], 5)
    empty = create_product(https, admin, name="Digital thermometer", price_cents=1999)
    return stocked, empty


def add(https: TestClient, product_id: str, quantity: int = 1) -> Any:
    token = csrf(https.get("/shop").text)
    return https.post(
        "/shop/cart",
        data={"csrf_token": token, "product_id": product_id, "quantity": str(quantity)},
        follow_redirects=False,
    )


def counts(db: Session) -> tuple[int, int]:
    return (
        db.scalar(select(func.count()).select_from(Order)) or 0,
        db.scalar(select(func.count()).select_from(Patient)) or 0,
    )


def test_the_shop_lists_products_with_prices_and_marks_those_out_of_stock(
    https: TestClient, admin: Headers
) -> None:
    products(https, admin)
    for path in ("/", "/shop"):
        page = https.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "Saline nasal spray" in page.text and "$6.50" in page.text
        assert "Digital thermometer" in page.text and "Unavailable" in page.text
        # only the product in stock has an add form
        assert page.text.count('name="product_id"') == 1
    found = https.get("/shop", params={"q": "thermo"}).text
    assert "Digital thermometer" in found and "Saline nasal spray" not in found


def test_adding_to_the_cart_keeps_ids_and_quantities_in_a_signed_cookie(
    https: TestClient, admin: Headers
) -> None:
    stocked, _ = products(https, admin)
    response = add(https, stocked["id"], 2)
    assert response.status_code == 303 and response.headers["location"] == "/shop/cart"
    cookie = https.cookies[CART_COOKIE]
    assert decode_cart(cookie) == {uuid.UUID(stocked["id"]): 2}
    assert "Saline" not in cookie  # ids only
    cart = https.get("/shop/cart").text
    assert "$13.00" in cart

    # An altered cookie is an empty cart.
    https.cookies.delete(CART_COOKIE)
    https.cookies.set(CART_COOKIE, cookie.replace("*2", "*9"))
    assert "Your cart is empty" in https.get("/shop/cart").text


def test_an_unavailable_product_cannot_be_added(https: TestClient, admin: Headers) -> None:
    _, empty = products(https, admin)
    response = add(https, empty["id"])
    assert response.status_code == 409
    assert "out of stock" in response.text
    assert CART_COOKIE not in https.cookies


def test_the_cart_refuses_more_than_an_order_may_hold(https: TestClient, admin: Headers) -> None:
    stocked, _ = products(https, admin)
    assert add(https, stocked["id"], 10).status_code == 303
    refused = add(https, stocked["id"], 1)
    assert refused.status_code == 422
    assert "At most 10 of one product" in refused.text
    assert decode_cart(https.cookies[CART_COOKIE]) == {uuid.UUID(stocked["id"]): 10}


def test_a_form_without_this_browsers_token_is_refused(https: TestClient, admin: Headers) -> None:
    stocked, _ = products(https, admin)
    https.get("/shop")
    for token in ("", "forged", csrf(https.get("/shop").text) + "0"):
        response = https.post(
            "/shop/cart",
            data={"csrf_token": token, "product_id": stocked["id"], "quantity": "1"},
            follow_redirects=False,
        )
        assert response.status_code == 403
        assert CART_COOKIE not in https.cookies
    # A token from another browser (another form cookie) does not work either.
    with TestClient(https.app, base_url="https://testserver") as other:
        theirs = csrf(other.get("/shop").text)
    response = https.post(
        "/shop/cart",
        data={"csrf_token": theirs, "product_id": stocked["id"], "quantity": "1"},
        follow_redirects=False,
    )
    assert response.status_code == 403


def test_bad_details_show_every_error_and_place_nothing(
    https: TestClient, admin: Headers, db: Session
) -> None:
    stocked, _ = products(https, admin)
    add(https, stocked["id"])
    before = counts(db)
    token = csrf(https.get("/shop/details").text)
    response = https.post(
        "/shop/details",
        data={
            "csrf_token": token,
            "name": " ",
            "email": "not-an-address",
            "phone": "call me",
            "date_of_birth": "2999-01-01",
        },
        follow_redirects=False,
    )
    assert response.status_code == 422
    for message in (
        "Enter your full name.",
        "Enter your e-mail address",
        "Enter your phone number",
        "Enter your date of birth",
        "Agree to the privacy notice",
    ):
        assert message in response.text
    assert 'aria-invalid="true"' in response.text
    assert 'value="not-an-address"' in response.text  # what was typed stays
    assert counts(db) == before
    assert COOKIE_NAME not in https.cookies


def test_good_details_place_the_self_order_and_open_the_payment_page(
    https: TestClient, admin: Headers, db: Session
) -> None:
    stocked, _ = products(https, admin)
    add(https, stocked["id"], 2)
    token = csrf(https.get("/shop/details").text)
    response = https.post(
        "/shop/details",
        data={"csrf_token": token, **DETAILS, "consent": "yes"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/pay"
    assert CART_COOKIE not in https.cookies  # the cart became the order
    checkout = read_cookie(https.cookies[COOKIE_NAME])
    assert checkout is not None and checkout.verified  # the patient just typed the birth date
    order = db.scalars(select(Order).order_by(Order.created_at.desc())).first()
    assert order is not None and order.total_cents == 1300 and order.doctor_id is None

    pay = https.get("/pay")
    assert pay.status_code == 200
    assert "Pay for your order" in pay.text and "$13.00" in pay.text
    assert "Robin Shopper" in pay.text


def test_an_order_the_stock_cannot_fill_any_more_shows_an_error_and_places_nothing(
    https: TestClient, admin: Headers, db: Session
) -> None:
    stocked, _ = products(https, admin)
    add(https, stocked["id"], 5)
    # Someone else buys the stock meanwhile.
    other = https.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": stocked["id"], "quantity": 1}], **DETAILS},
    )
    assert other.status_code == 201, other.text
    before = counts(db)
    token = csrf(https.get("/shop/details").text)
    response = https.post(
        "/shop/details",
        data={"csrf_token": token, **DETAILS, "consent": "yes"},
        follow_redirects=False,
    )
    assert response.status_code == 422
    assert "Not enough stock left for: Saline nasal spray" in response.text
    assert counts(db) == before


def ask_for_link(https: TestClient, email: str, date_of_birth: str) -> Any:
    token = csrf(https.get("/my-orders").text)
    return https.post(
        "/my-orders",
        data={"csrf_token": token, "email": email, "date_of_birth": date_of_birth},
    )


def orders_link_messages(db: Session) -> list[OutboxMessage]:
    return list(
        db.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key.like("%orders-link-%")))
    )


def test_my_orders_answers_the_same_for_known_and_unknown_details_and_mails_only_a_match(
    https: TestClient, admin: Headers, db: Session
) -> None:
    stocked, _ = products(https, admin)
    placed = https.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": stocked["id"], "quantity": 1}], **DETAILS},
    )
    assert placed.status_code == 201

    answers = {}
    for case, (email, birth) in {
        "known": (DETAILS["email"].upper(), DETAILS["date_of_birth"]),
        "unknown e-mail": ("nobody.here@example.com", DETAILS["date_of_birth"]),
        "wrong birth date": (DETAILS["email"], "1990-01-01"),
    }.items():
        started = time.monotonic()
        response = ask_for_link(https, email, birth)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed >= 0.4  # PATIENT_ACCESS_MIN_RESPONSE_MS
        main = response.text.split("<main", 1)[1].split("</main>")[0]
        answers[case] = re.sub(r'value="[^"]*"', "", main)
    assert len(set(answers.values())) == 1, answers
    assert "Check your e-mail" in answers["known"]
    (message,) = orders_link_messages(db)
    assert db.scalar(select(func.count()).select_from(PatientAccessLink)) == 1
    assert message.dedupe_key.endswith(str(db.scalar(select(PatientAccessLink.id))))


def test_bad_my_orders_details_are_shown_and_nothing_is_sent(
    https: TestClient, db: Session
) -> None:
    response = ask_for_link(https, "nope", "yesterday")
    assert response.status_code == 422
    assert "Enter your e-mail address" in response.text
    assert "Enter your date of birth" in response.text
    assert orders_link_messages(db) == []


def _issue_link(db: Session, https: TestClient, admin: Headers) -> str:
    """A self-order, then a "my orders" request; the token as the e-mail carries it."""
    from app.shop import service

    stocked, _ = products(https, admin)
    placed = https.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": stocked["id"], "quantity": 3}], **DETAILS},
    )
    assert placed.status_code == 201
    captured: list[str] = []
    original = service.orders_url

    def capture(token: str) -> str:
        captured.append(token)
        return original(token)

    service.orders_url = capture  # type: ignore[assignment]
    try:
        assert ask_for_link(https, DETAILS["email"], DETAILS["date_of_birth"]).status_code == 200
    finally:
        service.orders_url = original  # type: ignore[assignment]
    (token,) = captured
    return token


def test_the_link_opens_the_orders_once_exchanged_for_a_cookie_and_is_audited(
    https: TestClient, admin: Headers, db: Session
) -> None:
    token = _issue_link(db, https, admin)
    order = db.scalars(select(Order)).one()
    db.add(PharmacySubmission(order_id=order.id, order_item_ids=[], status="dispensed"))
    db.flush()
    opened = https.get(f"/my-orders/{token}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/my-orders/list"
    page = https.get("/my-orders/list")
    assert page.status_code == 200
    assert "Saline nasal spray" in page.text and "Awaiting payment" in page.text
    assert "$19.50" in page.text
    assert "Dispensed by the pharmacy" in page.text  # the pharmacy's progress
    reads = db.scalars(
        select(AuditEntry.actor_subject).where(AuditEntry.action == "order.read")
    ).all()
    assert any(s.startswith("orders-link:") for s in reads)

    # Another browser without the cookie sees nothing.
    with TestClient(https.app, base_url="https://testserver") as other:
        refused = other.get("/my-orders/list")
        assert refused.status_code == 401 and "Saline" not in refused.text


def test_an_expired_or_replaced_link_shows_nothing(
    https: TestClient, admin: Headers, db: Session
) -> None:
    token = _issue_link(db, https, admin)
    db.execute(update(PatientAccessLink).values(expires_at=utcnow() - timedelta(minutes=1)))
    expired = https.get(f"/my-orders/{token}", follow_redirects=False)
    assert expired.status_code == 410 and "Saline" not in expired.text
    assert https.get("/my-orders/not-a-token").status_code == 404


def test_my_orders_requests_are_rate_limited_per_client(
    https: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATE_LIMIT_ORDERS_LINK_PER_MINUTE", "2")
    monkeypatch.setenv("PATIENT_ACCESS_MIN_RESPONSE_MS", "0")
    get_settings.cache_clear()
    left = 60 - time.time() % 60
    if left < 5:  # fixed windows: keep the three requests in one minute
        time.sleep(left + 0.2)
    try:
        for _ in range(2):
            assert ask_for_link(https, "someone@example.com", "1980-01-01").status_code == 200
        refused = ask_for_link(https, "someone@example.com", "1980-01-01")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"].startswith("text/html")  # a page, on a page
        assert "Please wait" in refused.text
        # The API keeps its problem document.
        monkeypatch.setenv("RATE_LIMIT_PUBLIC_CATALOG_PER_MINUTE", "1")
        get_settings.cache_clear()
        https.get("/api/v1/public/products")
        api = https.get("/api/v1/public/products")
        assert api.status_code == 429
        assert api.headers["content-type"] == "application/problem+json"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
