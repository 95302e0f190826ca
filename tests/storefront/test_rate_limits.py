"""Anonymous routes are rate limited per client in PostgreSQL; self-orders hold stock briefly;
the public never learns stock levels."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app import db as portal_db
from app import ratelimit
from app.actor import Actor
from app.catalog.schemas import ProductCreate
from app.config import get_settings
from app.models import (
    AuditEntry,
    CheckoutLink,
    Order,
    OutboxMessage,
    Patient,
    RateLimitCounter,
    StockMovement,
)
from app.models.base import utcnow
from app.orders import flows as order_flows
from app.patients.schemas import PatientCreate
from app.ratelimit import Bucket, count_hit, prune
from app.storefront.flows import place_self_order
from app.storefront.schemas import SelfOrderCreate
from devtools.mail_sink import MailSink
from tests.fixtures.cli import run_portal
from tests.fixtures.database import TestDatabase
from tests.fixtures.live_api import live_api
from tests.fixtures.orders import ORDERS, create_product, order_body, receive_lot
from tests.fixtures.patients import Headers, create_patient
from tests.fixtures.problems import assert_problem
from tests.fixtures.stock import seed_stock

PERSON = {
    "name": "Quinn Sample",
    "email": "quinn.sample@example.com",
    "phone": "+1 555 0142",
    "date_of_birth": "1979-03-08",
}
ALL_LIMITS = [
    f"RATE_LIMIT_{bucket}_PER_{window}"
    for bucket in ("SELF_ORDER", "DOB_CHECK", "PUBLIC_CATALOG")
    for window in ("MINUTE", "HOUR")
]
WRITTEN = (Order, Patient, AuditEntry, StockMovement, OutboxMessage, CheckoutLink)

Limits = Callable[..., None]


@pytest.fixture
def limits() -> Iterator[Limits]:
    """`limits(self_order_per_minute=2)`: exactly these limits, every other one off."""
    with pytest.MonkeyPatch.context() as patch:

        def set_limits(**values: int) -> None:
            for name in ALL_LIMITS:
                value = values.pop(name.removeprefix("RATE_LIMIT_").lower(), 0)
                patch.setenv(name, str(value))
            assert not values, f"unknown limits {values}"
            get_settings.cache_clear()
            _clear_of_window_end()

        yield set_limits
    get_settings.cache_clear()


def _clear_of_window_end() -> None:
    """Fixed windows: do not start a test in a minute's last seconds, so that its requests
    fall in one window."""
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.2)


def _stocked_product(client: TestClient, admin: Headers, units: int = 50) -> Any:
    product = create_product(client, admin, requires_prescription=False)
    receive_lot(client, admin, product["id"], units)
    return product


def _self_order(client: Any, product: Any, quantity: int = 1, **person: str) -> Any:
    return client.post(
        "/api/v1/public/orders",
        json={"items": [{"product_id": product["id"], "quantity": quantity}], **PERSON, **person},
    )


def _rows(db: Session) -> list[int | None]:
    db.expire_all()
    return [db.scalar(select(func.count()).select_from(t)) for t in WRITTEN]


def _assert_rate_limited(response: Any, longest_wait: int = 60) -> None:
    body = assert_problem(response, 429, "/problems/rate-limited")
    assert 1 <= int(response.headers["retry-after"]) <= longest_wait
    assert response.headers["retry-after"] in body["detail"]


# -- the limits ----------------------------------------------------------------------------------


def test_the_self_order_over_the_limit_is_429_with_retry_after_and_writes_nothing(
    client: TestClient, admin: Headers, db: Session, limits: Limits
) -> None:
    product = _stocked_product(client, admin)
    limits(self_order_per_minute=2)
    for _ in range(2):
        assert _self_order(client, product).status_code == 201
    before = _rows(db)

    refused = _self_order(client, product)

    _assert_rate_limited(refused)
    assert _rows(db) == before


def test_limits_are_counted_per_client_address(
    app: Any, client: TestClient, admin: Headers, limits: Limits
) -> None:
    product = _stocked_product(client, admin)
    limits(self_order_per_minute=1)
    with (
        TestClient(app, client=("203.0.113.10", 40000)) as first,
        TestClient(app, client=("203.0.113.11", 40000)) as second,
    ):
        assert _self_order(first, product).status_code == 201
        _assert_rate_limited(_self_order(first, product))
        assert _self_order(second, product).status_code == 201


def test_a_new_window_lets_the_client_in_again(
    client: TestClient, admin: Headers, db: Session, limits: Limits
) -> None:
    product = _stocked_product(client, admin)
    limits(self_order_per_minute=1)
    assert _self_order(client, product).status_code == 201
    _assert_rate_limited(_self_order(client, product))

    # A minute passes: the counted window is now the previous one.
    db.execute(
        text(
            "UPDATE rate_limit_counters SET window_start = window_start - interval '1 minute',"
            " expires_at = expires_at - interval '1 minute'"
        )
    )

    assert _self_order(client, product).status_code == 201


def test_the_hourly_limit_outlasts_the_minutes_and_names_the_hours_end(db: Session) -> None:
    connection = db.connection()
    hour = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    allowed = {60: 5, 3600: 2}

    def hit(at: timedelta) -> int | None:
        return count_hit(connection, Bucket.SELF_ORDER, "client-a", allowed, now=hour + at)

    assert hit(timedelta(minutes=1)) is None
    assert hit(timedelta(minutes=20)) is None
    assert hit(timedelta(minutes=40)) == 20 * 60  # refused until the hour is over
    assert hit(timedelta(minutes=59, seconds=59, milliseconds=500)) == 1
    assert hit(timedelta(hours=1)) is None
    assert count_hit(connection, Bucket.DOB_CHECK, "client-a", allowed, now=hour) is None


def test_closed_windows_are_pruned(db: Session) -> None:
    connection = db.connection()
    start = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    count_hit(connection, Bucket.PUBLIC_CATALOG, "client-b", {60: 5, 3600: 5}, now=start)

    assert prune(connection, now=start + timedelta(minutes=2)) == 1  # the minute's row
    assert db.scalar(select(func.count()).select_from(RateLimitCounter)) == 1
    assert prune(connection, now=start + timedelta(hours=2)) == 1


def test_the_date_of_birth_check_is_limited_before_it_counts_a_failure(
    app: Any, client: TestClient, admin: Headers, db: Session, limits: Limits
) -> None:
    product = _stocked_product(client, admin)
    order = _self_order(client, product).json()
    limits(dob_check_per_minute=2)
    with TestClient(app, base_url="https://testserver") as browser:
        assert browser.get(urlsplit(order["checkout_url"]).path).status_code == 200
        for _ in range(2):
            wrong = browser.post("/pay/verify", data={"date_of_birth": "1950-01-01"})
            assert wrong.status_code == 422
        before = _rows(db)

        refused = browser.post("/pay/verify", data={"date_of_birth": "1950-01-01"})

    _assert_rate_limited(refused)
    assert _rows(db) == before
    link = db.scalar(select(CheckoutLink).where(CheckoutLink.order_id == order["order_id"]))
    assert link is not None and link.failed_attempts == 2


def test_the_public_catalog_is_limited(client: TestClient, limits: Limits) -> None:
    limits(public_catalog_per_minute=3)
    for _ in range(3):
        assert client.get("/api/v1/public/products").status_code == 200
    _assert_rate_limited(client.get("/api/v1/public/products"))


def test_a_limit_of_zero_is_off_and_counts_nothing(
    client: TestClient, admin: Headers, db: Session, limits: Limits
) -> None:
    product = _stocked_product(client, admin)
    limits()
    for _ in range(8):
        assert client.get("/api/v1/public/products").status_code == 200
        assert _self_order(client, product).status_code == 201
    assert db.scalar(select(func.count()).select_from(RateLimitCounter)) == 0


def test_the_default_limits_are_on(client: TestClient, db: Session) -> None:
    settings = get_settings()
    assert all(getattr(settings, name.lower()) > 0 for name in ALL_LIMITS)
    assert client.get("/api/v1/public/products").status_code == 200
    hits = db.scalars(
        select(RateLimitCounter.hits).where(RateLimitCounter.bucket == "public-catalog")
    )
    assert list(hits) == [1, 1]  # the minute's and the hour's


# -- on a database of its own: the hit commits on its own connection ------------------------------


@pytest.fixture
def committing_client(fresh_db: TestDatabase) -> Iterator[tuple[TestClient, Engine]]:
    """The app as it runs: the request's session and the counters both on fresh_db."""
    from app.main import create_app

    engine = portal_db.make_engine(fresh_db.app_url, pool_size=2)
    factory = sessionmaker(engine, expire_on_commit=False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DATABASE_URL", fresh_db.app_url)
            patch.setattr(portal_db, "session_factory", lambda: factory)
            get_settings.cache_clear()
            with TestClient(create_app(), raise_server_exceptions=False) as client:
                yield client, engine
    finally:
        ratelimit._engine_for(fresh_db.app_url).dispose()
        ratelimit._engine_for.cache_clear()
        engine.dispose()
        get_settings.cache_clear()


def test_failed_requests_count_too_and_the_count_outlives_their_rollback(
    committing_client: tuple[TestClient, Engine], limits: Limits
) -> None:
    client, engine = committing_client
    limits(self_order_per_minute=2)
    missing = {"id": "00000000-0000-4000-8000-000000000000"}
    for _ in range(2):
        assert _self_order(client, missing).status_code == 404  # refused, rolled back

    _assert_rate_limited(_self_order(client, missing))

    with Session(engine) as session:
        assert session.scalars(select(RateLimitCounter.hits)).all() == [3]
        assert [session.scalar(select(func.count()).select_from(t)) for t in WRITTEN] == [0] * 6


def test_two_api_processes_share_one_limit(
    fresh_db: TestDatabase, limits: Limits, tmp_path: Path
) -> None:
    limits(public_catalog_per_minute=3)
    settings = {"DATABASE_URL": fresh_db.app_url}
    limited = {k: v for k, v in os.environ.items() if k.startswith("RATE_LIMIT_")}
    with (
        live_api({**settings, **limited}, tmp_path / "a.log") as first,
        live_api({**settings, **limited}, tmp_path / "b.log") as second,
    ):
        _clear_of_window_end()
        assert httpx.get(f"{first}/api/v1/public/products").status_code == 200
        assert httpx.get(f"{second}/api/v1/public/products").status_code == 200
        assert httpx.get(f"{first}/api/v1/public/products").status_code == 200
        refused = httpx.get(f"{second}/api/v1/public/products")
    _assert_rate_limited(refused)


def test_a_client_cannot_pick_its_own_address_with_forwarded_headers(
    fresh_db: TestDatabase, limits: Limits, tmp_path: Path
) -> None:
    """Without FORWARDED_ALLOW_IPS no proxy is trusted: `X-Forwarded-For` and `Forwarded`
    from the client change nothing (uvicorn alone would believe them from loopback)."""
    limits(public_catalog_per_minute=2)
    settings = {"DATABASE_URL": fresh_db.app_url}
    limited = {k: v for k, v in os.environ.items() if k.startswith("RATE_LIMIT_")}
    with live_api({**settings, **limited}, tmp_path / "api.log") as base:
        _clear_of_window_end()
        products = f"{base}/api/v1/public/products"
        assert httpx.get(products).status_code == 200
        assert httpx.get(products).status_code == 200
        spoofed = [
            httpx.get(products, headers={"X-Forwarded-For": "10.9.0.1"}),
            httpx.get(products, headers={"Forwarded": "for=10.9.0.2", "X-Real-IP": "10.9.0.2"}),
        ]
    for refused in spoofed:
        _assert_rate_limited(refused)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    fresh_db: TestDatabase, limits: Limits, tmp_path: Path
) -> None:
    limits(public_catalog_per_minute=1)
    settings = {"DATABASE_URL": fresh_db.app_url, "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    limited = {k: v for k, v in os.environ.items() if k.startswith("RATE_LIMIT_")}
    with live_api({**settings, **limited}, tmp_path / "api.log") as base:
        _clear_of_window_end()
        products = f"{base}/api/v1/public/products"
        first = httpx.get(products, headers={"X-Forwarded-For": "10.9.0.1"})
        other = httpx.get(products, headers={"X-Forwarded-For": "10.9.0.2"})
        again = httpx.get(products, headers={"X-Forwarded-For": "10.9.0.1"})
    assert (first.status_code, other.status_code) == (200, 200)
    _assert_rate_limited(again)


# -- the self-order's short payment window ---------------------------------------------------------


def test_a_self_order_has_its_own_short_payment_window_and_then_releases_its_stock(
    client: TestClient, admin: Headers, doctor: Headers, db: Session
) -> None:
    product = _stocked_product(client, admin, units=10)
    patient = create_patient(client, doctor)
    staff = client.post(ORDERS, json=order_body(patient["id"], (product["id"], 2)), headers=doctor)
    assert staff.status_code == 201, staff.text

    answer = _self_order(client, product, quantity=3)

    assert answer.status_code == 201, answer.text
    expires_at = datetime.fromisoformat(answer.json()["expires_at"])
    ttl = timedelta(minutes=get_settings().self_order_payment_ttl_minutes)
    assert ttl == timedelta(minutes=30)
    assert abs(expires_at - (utcnow() + ttl)) < timedelta(minutes=1)
    link = db.scalar(select(CheckoutLink).where(CheckoutLink.order_id == answer.json()["order_id"]))
    assert link is not None and link.expires_at == expires_at

    expired = order_flows.expire_unpaid_orders(
        db, Actor.system("test"), now=utcnow() + ttl + timedelta(minutes=1)
    )

    assert expired == 1
    db.expire_all()
    assert db.get(Order, answer.json()["order_id"]).status == "cancelled"  # type: ignore[union-attr]
    assert db.get(Order, staff.json()["id"]).status == "pending"  # type: ignore[union-attr]
    still_reserved = db.scalar(
        select(func.sum(StockMovement.delta_reserved)).where(
            StockMovement.order_id == answer.json()["order_id"]
        )
    )
    assert still_reserved == 0


# -- stock levels stay private ---------------------------------------------------------------------


def test_a_public_insufficient_stock_answer_does_not_tell_the_stock_level(
    client: TestClient, admin: Headers, doctor: Headers
) -> None:
    product = _stocked_product(client, admin, units=3)

    public = _self_order(client, product, quantity=7)

    body = assert_problem(public, 409, "/problems/insufficient-stock")
    assert body["sku"] == product["sku"]
    assert "available" not in body and "requested" not in body
    assert not any(c.isdigit() for c in body["detail"].replace(product["sku"], ""))
    # Staff still get the numbers.
    patient = create_patient(client, doctor)
    staff = client.post(ORDERS, json=order_body(patient["id"], (product["id"], 7)), headers=doctor)
    assert assert_problem(staff, 409, "/problems/insufficient-stock")["available"] == 3


def test_abandoned_self_orders_expire_and_the_worker_prunes_closed_windows(
    fresh_db: TestDatabase, tmp_path: Path
) -> None:
    stocked = seed_stock(
        fresh_db,
        doctor_subject="doctor-worker",
        doctor_email="doctor-worker@clinic.test",
        patient=PatientCreate(
            name="Pat Doe",
            email="pat.doe@example.com",
            phone="+1 555 0150",
            date_of_birth=date(1970, 5, 5),
        ),
        product=ProductCreate(sku="OTC-W1", name="Saline spray", price_cents=700),
        lots=[("W-1", 365, 10)],
    )
    engine = portal_db.make_engine(fresh_db.owner_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            order = place_self_order(
                session,
                SelfOrderCreate.model_validate(
                    {**PERSON, "items": [{"product_id": str(stocked.product_id), "quantity": 4}]}
                ),
                "203.0.113.20",
            ).order
            order.expires_at = utcnow() - timedelta(seconds=1)  # the patient walked away
            order_id = order.id
            connection = session.connection()
            count_hit(
                connection, Bucket.SELF_ORDER, "gone", {60: 5}, now=utcnow() - timedelta(hours=2)
            )
            # A window that is still open when the worker runs, however slowly.
            later = utcnow() + timedelta(hours=1)
            count_hit(connection, Bucket.SELF_ORDER, "here", {60: 5}, now=later)

        # The expiry is scheduled by Dagster; `portal orders expire` runs the same operation.
        with MailSink(tmp_path / "mail") as sink:
            for command in (("orders", "expire"), ("worker", "--once")):
                result = run_portal(
                    fresh_db, *command, DATA_DIR=str(tmp_path), SMTP_PORT=str(sink.port)
                )
                assert result.returncode == 0, result.stdout + result.stderr

        with Session(engine) as session:
            assert session.get(Order, order_id).status == "cancelled"  # type: ignore[union-attr]
            reserved = session.scalar(
                select(func.sum(StockMovement.delta_reserved)).where(
                    StockMovement.order_id == order_id
                )
            )
            assert reserved == 0
            keys = session.scalars(select(RateLimitCounter.client_key)).all()
            assert keys == ["here"]
    finally:
        engine.dispose()
