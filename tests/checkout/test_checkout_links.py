"""Patient payment links, through the HTTP API and the patient's pages.

A doctor's order comes with a link carrying a long random token, stored only as its SHA-256.
Opening the link swaps the token for a strict, HttpOnly, Secure cookie; nothing personal is
shown until the patient confirms their date of birth, and repeated wrong answers lock the link.
Expired, withdrawn, replaced, locked and unknown links each get a plain page that tells the
patient what to do. The payment API accepts the verified cookie for its own order only.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.actor import Actor
from app.checkout.service import COOKIE_NAME
from app.config import get_settings
from app.models import CheckoutLink, Order
from app.models.base import utcnow
from app.orders import service as orders
from tests.fixtures.orders import place_order
from tests.fixtures.patients import DATE_OF_BIRTH, Headers, Json, audit_entries, create_patient

ORDERS = "/api/v1/orders"
CREATE_INTENT = "/api/v1/payments/create-intent"
WRONG_DATE = "1980-04-03"
TOKEN = re.compile(r"/pay/([A-Za-z0-9_-]+)$")
TRACEBACK_MARKERS = ("Traceback", 'File "', "Internal Server Error", "sqlalchemy", "Exception")


# -- helpers ---------------------------------------------------------------------------------
def token_of(checkout_url: str) -> str:
    match = TOKEN.search(urlsplit(checkout_url).path)
    assert match, checkout_url
    return match.group(1)


def link_path(checkout_url: str) -> str:
    """The link as the test client requests it (PUBLIC_BASE_URL is another host)."""
    return urlsplit(checkout_url).path


def assert_private_page(response: httpx.Response, status: int) -> str:
    """Every patient page: its status, HTML, no referrer, never cached or framed."""
    assert response.status_code == status, response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    if status in (301, 302, 303, 307, 308):
        return ""
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<meta name="referrer" content="no-referrer">' in html
    for marker in TRACEBACK_MARKERS:
        assert marker not in html, f"{marker!r} on a patient page:\n{html}"
    return html


def assert_problem_page(
    response: httpx.Response, status: int, title: str, *, personal: tuple[str, ...] = ()
) -> str:
    """A link that cannot be used: a clear title, what to do, and nothing about the order."""
    html = assert_private_page(response, status)
    assert f"<title>{title} · Clinic payments</title>" in html
    assert f"<h1>{title}</h1>" in html
    assert "ask for a new payment link" in html
    assert "set-cookie" not in response.headers
    for value in personal:
        assert value not in html
    return html


def personal_data(patient: Json, product: Json) -> tuple[str, ...]:
    return (patient["name"], patient["email"], patient["phone"], product["name"])


def open_link(client: TestClient, checkout_url: str) -> httpx.Response:
    return client.get(link_path(checkout_url), follow_redirects=False)


def submit_date_of_birth(client: TestClient, value: str) -> httpx.Response:
    return client.post("/pay/verify", data={"date_of_birth": value}, follow_redirects=False)


def verified(client: TestClient, checkout_url: str) -> None:
    """Open the link and pass the date-of-birth check (the cookie jar keeps the result)."""
    assert open_link(client, checkout_url).status_code == 303
    answer = submit_date_of_birth(client, DATE_OF_BIRTH)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/pay"


def cookie_value(client: TestClient) -> str:
    value = client.cookies.get(COOKIE_NAME)
    assert value, "no checkout cookie in the jar"
    return value


def with_cookie(client: TestClient, value: str) -> None:
    """Replace whatever the jar holds with exactly this checkout cookie."""
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, value)


def link_row(db: Session, token: str) -> CheckoutLink:
    db.expire_all()
    link = db.scalar(
        select(CheckoutLink).where(
            CheckoutLink.token_hash == hashlib.sha256(token.encode()).hexdigest()
        )
    )
    assert link is not None
    return link


# -- the link and the cookie ------------------------------------------------------------------
def test_an_order_comes_with_a_link_whose_long_token_is_stored_only_as_its_hash(
    order: Json, db: Session
) -> None:
    token = token_of(order["checkout_url"])
    # secrets.token_urlsafe(16) is 22 characters: 128 bits; anything shorter is guessable.
    assert len(token) >= 22
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)

    rows = db.execute(
        text("SELECT * FROM checkout_links WHERE order_id = :id"), {"id": order["id"]}
    ).mappings()
    (row,) = list(rows)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    for column, value in row.items():
        assert token not in str(value), f"the raw token is stored in checkout_links.{column}"
    # Nor anywhere in the audit log of the order.
    for entry in audit_entries(db, order["id"]):
        assert token not in repr((entry.before, entry.after))


def test_opening_the_link_sets_a_strict_http_only_secure_cookie_and_leaves_the_token_behind(
    https: TestClient, order: Json
) -> None:
    token = token_of(order["checkout_url"])
    response = open_link(https, order["checkout_url"])

    assert_private_page(response, 303)
    assert response.headers["location"] == "/pay"
    (set_cookie,) = response.headers.get_list("set-cookie")
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert attributes[0].startswith(f"{COOKIE_NAME}=")
    assert "httponly" in attributes
    assert "secure" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert token not in set_cookie


def test_before_the_date_of_birth_check_the_page_shows_only_the_form(
    https: TestClient, order: Json, patient: Json, product: Json
) -> None:
    open_link(https, order["checkout_url"])
    html = assert_private_page(https.get("/pay"), 200)

    assert "<h1>Confirm it is you</h1>" in html
    assert 'name="date_of_birth"' in html
    for value in personal_data(patient, product):
        assert value not in html
    assert "$25.98" not in html
    assert "js.stripe.com" not in html  # no payment form either


def test_a_wrong_date_of_birth_is_refused_with_the_attempts_left_and_audited(
    https: TestClient, order: Json, patient: Json, product: Json, db: Session
) -> None:
    open_link(https, order["checkout_url"])
    response = submit_date_of_birth(https, WRONG_DATE)

    html = assert_private_page(response, 422)
    limit = get_settings().checkout_max_failed_attempts
    assert f"{limit - 1} attempt(s) left" in html
    assert 'aria-invalid="true"' in html
    for value in personal_data(patient, product):
        assert value not in html
    (entry,) = audit_entries(db, order["id"], "checkout_link.dob_failed")
    assert entry.after == {"failed_attempts": 1, "locked": False}
    assert entry.actor_subject.startswith("checkout-link:")
    assert entry.actor_role == "checkout-link"
    assert WRONG_DATE not in repr((entry.before, entry.after))  # the guess is not kept
    # Still unverified: the payment page is the form again.
    assert "<h1>Confirm it is you</h1>" in assert_private_page(https.get("/pay"), 200)


def test_a_malformed_date_of_birth_is_asked_again_without_costing_an_attempt(
    https: TestClient, order: Json, db: Session
) -> None:
    open_link(https, order["checkout_url"])
    html = assert_private_page(submit_date_of_birth(https, "2 April 1980"), 422)
    assert "year, month and day" in html
    assert link_row(db, token_of(order["checkout_url"])).failed_attempts == 0


def test_the_link_locks_after_the_allowed_failures_and_then_refuses_even_the_right_date(
    https: TestClient, order: Json, patient: Json, product: Json, db: Session
) -> None:
    limit = get_settings().checkout_max_failed_attempts
    assert limit == 5  # the documented default
    open_link(https, order["checkout_url"])
    for attempt in range(1, limit):
        html = assert_private_page(submit_date_of_birth(https, WRONG_DATE), 422)
        assert f"{limit - attempt} attempt(s) left" in html

    personal = personal_data(patient, product)
    last = submit_date_of_birth(https, WRONG_DATE)
    assert "locked" in assert_problem_page(last, 423, "Link locked", personal=personal)
    assert link_row(db, token_of(order["checkout_url"])).locked_at is not None
    failures = audit_entries(db, order["id"], "checkout_link.dob_failed")
    assert [e.after for e in failures][-1] == {"failed_attempts": limit, "locked": True}

    assert_problem_page(
        submit_date_of_birth(https, DATE_OF_BIRTH), 423, "Link locked", personal=personal
    )
    assert_problem_page(https.get("/pay"), 423, "Link locked", personal=personal)
    https.cookies.clear()
    assert_problem_page(
        open_link(https, order["checkout_url"]), 423, "Link locked", personal=personal
    )
    assert audit_entries(db, order["id"], "checkout_link.verified") == []


def test_the_right_date_of_birth_shows_the_items_the_total_and_the_patients_details(
    https: TestClient, order: Json, patient: Json, product: Json, db: Session
) -> None:
    open_link(https, order["checkout_url"])
    answer = submit_date_of_birth(https, DATE_OF_BIRTH)
    assert_private_page(answer, 303)
    assert answer.headers["location"] == "/pay"
    assert "samesite=strict" in answer.headers["set-cookie"].lower()

    html = assert_private_page(https.get("/pay"), 200)
    assert "<h1>Pay for your order</h1>" in html
    assert f"Order {order['id'][:8].upper()}" in html
    assert product["name"] in html
    assert "$25.98" in html  # 2 x 12.99
    for value in (patient["name"], patient["email"], patient["phone"]):
        assert value in html
    assert 'id="payment-element"' in html
    (entry,) = audit_entries(db, order["id"], "checkout_link.verified")
    assert entry.actor_subject.startswith("checkout-link:")
    assert entry.actor_role == "checkout-link"
    assert link_row(db, token_of(order["checkout_url"])).first_used_at is not None


# -- links that cannot be used ----------------------------------------------------------------
def test_an_expired_link_shows_the_expired_page(
    https: TestClient, order: Json, patient: Json, product: Json, db: Session
) -> None:
    link = link_row(db, token_of(order["checkout_url"]))
    open_link(https, order["checkout_url"])  # a cookie from before it expired
    past = utcnow() - timedelta(minutes=1)
    link.expires_at = past
    order_row = db.get(Order, uuid.UUID(order["id"]))
    assert order_row is not None
    order_row.expires_at = past
    db.flush()

    personal = personal_data(patient, product)
    html = assert_problem_page(https.get("/pay"), 410, "Link expired", personal=personal)
    assert "expired" in html
    https.cookies.clear()
    assert_problem_page(
        open_link(https, order["checkout_url"]), 410, "Link expired", personal=personal
    )


def test_a_revoked_link_stops_working_at_once(
    https: TestClient, order: Json, doctor: Headers, patient: Json, product: Json, db: Session
) -> None:
    verified(https, order["checkout_url"])
    revoked = https.post(f"{ORDERS}/{order['id']}/checkout-link/revoke", headers=doctor)
    assert revoked.status_code == 204, revoked.text

    personal = personal_data(patient, product)
    # The verified cookie of a withdrawn link shows nothing, and cannot pay.
    assert_problem_page(https.get("/pay"), 410, "Link replaced", personal=personal)
    assert https.post(CREATE_INTENT, json={}).status_code == 401
    https.cookies.clear()
    assert_problem_page(
        open_link(https, order["checkout_url"]), 410, "Link replaced", personal=personal
    )
    assert len(audit_entries(db, order["id"], "checkout_link.revoked")) == 1


def test_a_reissued_link_replaces_the_old_one(
    https: TestClient, order: Json, doctor: Headers, patient: Json, product: Json
) -> None:
    reissued = https.post(f"{ORDERS}/{order['id']}/checkout-link", headers=doctor)
    assert reissued.status_code == 201, reissued.text
    new_url = reissued.json()["checkout_url"]
    assert token_of(new_url) != token_of(order["checkout_url"])

    html = assert_problem_page(
        open_link(https, order["checkout_url"]),
        410,
        "Link replaced",
        personal=personal_data(patient, product),
    )
    assert "replaced" in html
    verified(https, new_url)
    assert patient["name"] in assert_private_page(https.get("/pay"), 200)


def test_an_unknown_link_shows_not_found(https: TestClient) -> None:
    for path in ("/pay/" + "A" * 32, "/pay/x", "/pay/" + "b" * 200):
        html = assert_problem_page(https.get(path, follow_redirects=False), 404, "Link not found")
        assert "not valid" in html
    # No cookie at all: the payment and status pages know nothing.
    assert_problem_page(https.get("/pay"), 404, "Link not found")
    assert_problem_page(https.get("/orders/status"), 404, "Link not found")


def test_a_tampered_cookie_is_treated_as_unknown(
    https: TestClient, order: Json, patient: Json, product: Json
) -> None:
    open_link(https, order["checkout_url"])
    unverified = cookie_value(https)
    link_id, flag, expires, signature = unverified.split(".")
    assert flag == "0"
    personal = personal_data(patient, product)
    with_cookie(https, unverified)  # the genuine cookie, set the same way: the form
    assert "<h1>Confirm it is you</h1>" in assert_private_page(https.get("/pay"), 200)
    forged = [
        f"{link_id}.1.{expires}.{signature}",  # claims the date-of-birth check passed
        f"{link_id}.0.{int(expires) + 86400}.{signature}",  # extends its own life
        f"{uuid.uuid4()}.0.{expires}.{signature}",  # another link
        f"{link_id}.0.{expires}.{'0' * len(signature)}",
        "not-a-cookie",
    ]
    for value in forged:
        with_cookie(https, value)
        assert_problem_page(https.get("/pay"), 404, "Link not found", personal=personal)
        assert_problem_page(
            submit_date_of_birth(https, DATE_OF_BIRTH), 404, "Link not found", personal=personal
        )
        assert https.post(CREATE_INTENT, json={}).status_code == 401


# -- the payment API and the cookie -----------------------------------------------------------
def test_create_intent_needs_a_staff_token_or_a_verified_cookie(
    https: TestClient, order: Json
) -> None:
    no_credentials = https.post(CREATE_INTENT, json={"order_id": order["id"]})
    assert no_credentials.status_code == 401, no_credentials.text
    assert no_credentials.headers["content-type"] == "application/problem+json"

    open_link(https, order["checkout_url"])  # unverified cookie
    for body in ({}, {"order_id": order["id"]}):
        refused = https.post(CREATE_INTENT, json=body)
        assert refused.status_code == 401, refused.text
        assert "client_secret" not in refused.text


def test_a_verified_cookie_pays_its_own_order_and_no_other(
    https: TestClient, order: Json, doctor: Headers, product: Json
) -> None:
    other_patient = create_patient(https, doctor)
    other = place_order(https, doctor, other_patient["id"], (product["id"], 1))
    verified(https, order["checkout_url"])

    for body in ({"order_id": other["id"]}, {"order_id": str(uuid.uuid4())}):
        refused = https.post(CREATE_INTENT, json=body)
        assert refused.status_code == 404, refused.text
        assert refused.json()["type"] == "/problems/not-found"

    own = https.post(CREATE_INTENT, json={})
    assert own.status_code == 200, own.text
    again = https.post(CREATE_INTENT, json={"order_id": order["id"]})
    assert again.status_code == 200, again.text
    assert again.json()["payment_intent_id"] == own.json()["payment_intent_id"]


# -- the status page --------------------------------------------------------------------------
def status_headline(client: TestClient) -> str:
    html = assert_private_page(client.get("/orders/status"), 200)
    match = re.search(r'<p[^>]*id="order-status"[^>]*>([^<]+)</p>', html)
    assert match, html
    return match.group(1)


@pytest.mark.parametrize("final", ["paid", "cancelled"])
def test_the_status_page_follows_the_order(
    https: TestClient, order: Json, doctor: Headers, db: Session, final: str
) -> None:
    open_link(https, order["checkout_url"])
    assert status_headline(https) == "Awaiting payment"

    if final == "paid":
        orders.mark_paid(db, Actor.system("checkout-test"), uuid.UUID(order["id"]))
        db.flush()
    else:
        cancelled = https.post(f"{ORDERS}/{order['id']}/cancel", headers=doctor)
        assert cancelled.status_code == 200, cancelled.text
    assert status_headline(https) == {"paid": "Paid", "cancelled": "Cancelled"}[final]


def test_a_link_to_an_order_that_is_paid_leads_to_its_status_not_to_a_payment(
    https: TestClient, order: Json, db: Session
) -> None:
    orders.mark_paid(db, Actor.system("checkout-test"), uuid.UUID(order["id"]))
    db.flush()
    opened = open_link(https, order["checkout_url"])
    assert_private_page(opened, 303)
    assert opened.headers["location"] == "/orders/status"
    assert status_headline(https) == "Paid"
    again = https.get("/pay", follow_redirects=False)
    assert_private_page(again, 303)
    assert again.headers["location"] == "/orders/status"
    # The verification step is closed too: nothing to pay, nothing to show.
    answer = submit_date_of_birth(https, DATE_OF_BIRTH)
    assert_private_page(answer, 303)
    assert answer.headers["location"] == "/orders/status"


def test_the_original_link_of_a_paid_order_leads_to_its_status_not_to_a_new_link(
    https: TestClient, db: Session, order: Json
) -> None:
    from app.actor import Actor
    from app.checkout import service as checkout
    from app.orders import service as orders

    order_id = uuid.UUID(order["id"])
    orders.mark_paid(db, Actor.system("test"), order_id)
    order_row = db.get(Order, order_id)
    assert order_row is not None
    checkout.issue_link(db, Actor.system("test"), order_row, email=False)  # what payment does
    db.commit()

    response = https.get(link_path(order["checkout_url"]), follow_redirects=True)

    assert response.status_code == 200
    assert "Paid" in response.text
    assert "new payment link" not in response.text


@pytest.mark.parametrize("signature_tail", ["é", "\u00ff" * 4, "\u2603"])
def test_a_cookie_whose_signature_is_not_ascii_is_treated_as_unknown_not_a_500(
    https: TestClient, order: Json, patient: Json, product: Json, signature_tail: str
) -> None:
    """The signature is compared as bytes: a non-ASCII one is a forgery like any other."""
    open_link(https, order["checkout_url"])
    link_id, _flag, expires, signature = cookie_value(https).split(".")
    forged = f"{link_id}.1.{expires}.{signature[: -len(signature_tail)]}{signature_tail}"
    https.cookies.clear()
    raw = {"cookie": f"{COOKIE_NAME}={forged}".encode()}
    personal = personal_data(patient, product)

    assert_problem_page(https.get("/pay", headers=raw), 404, "Link not found", personal=personal)
    page = https.post(
        "/pay/verify", data={"date_of_birth": DATE_OF_BIRTH}, headers=raw, follow_redirects=False
    )
    assert_problem_page(page, 404, "Link not found", personal=personal)
    assert_problem_page(
        https.get("/orders/status", headers=raw), 404, "Link not found", personal=personal
    )
    refused = https.post(CREATE_INTENT, json={}, headers=raw)
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_date_of_birth_form_is_413_and_costs_no_attempt(
    https: TestClient, order: Json, db: Session, chunked: bool
) -> None:
    open_link(https, order["checkout_url"])
    limit = get_settings().max_page_body_bytes
    body = f"date_of_birth={DATE_OF_BIRTH}&padding={'x' * limit}".encode()

    def in_chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    refused = https.post(
        "/pay/verify",
        content=in_chunks() if chunked else body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )

    html = assert_private_page(refused, 413)
    assert "<h1>Form too large</h1>" in html
    assert link_row(db, token_of(order["checkout_url"])).failed_attempts == 0
    assert audit_entries(db, order["id"], "checkout_link.verified") == []
    # The patient goes back and sends the ordinary form.
    verified(https, order["checkout_url"])


def test_each_view_of_the_decrypted_payment_page_is_audited_as_a_read_by_the_link(
    https: TestClient, order: Json, patient: Json, db: Session
) -> None:
    """The form before the check shows nothing personal and reads nothing; every view after it
    decrypts the patient's details and items, and leaves one read row per entity."""
    open_link(https, order["checkout_url"])
    assert "<h1>Confirm it is you</h1>" in assert_private_page(https.get("/pay"), 200)
    assert audit_entries(db, order["id"], "order.read") == []
    assert audit_entries(db, patient["id"], "patient.read") == []

    answer = submit_date_of_birth(https, DATE_OF_BIRTH)
    assert answer.status_code == 303
    for _ in range(2):
        assert patient["name"] in assert_private_page(https.get("/pay"), 200)

    link = link_row(db, token_of(order["checkout_url"]))
    order_reads = audit_entries(db, order["id"], "order.read")
    patient_reads = audit_entries(db, patient["id"], "patient.read")
    assert len(order_reads) == len(patient_reads) == 2
    for row in [*order_reads, *patient_reads]:
        assert row.actor_subject == f"checkout-link:{link.id}"
        # The patient acting through their link: a role of its own, never `system` (or admin).
        assert row.actor_role == "checkout-link"
        assert patient["email"] not in str([row.before, row.after])
    assert [r.entity_type for r in patient_reads] == ["patient", "patient"]
