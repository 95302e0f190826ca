"""A real uvicorn server on a committed database, for tests that need real HTTP from outside
(localstripe's webhook deliveries, concurrent clients), and the data it needs, seeded through
the services in committed transactions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from app.catalog.schemas import ProductCreate
from app.patients.schemas import PatientCreate
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import live_api
from tests.fixtures.stock import Stocked, seed_stock
from tests.fixtures.stripe import WEBHOOK_SECRET, LocalStripe

DOCTOR_SUBJECT = "payments-doctor"
DOCTOR_EMAIL = "payments-doctor@clinic.example"


def seed(database: TestDatabase, *, units: int, price_cents: int = 1850) -> Stocked:
    """A doctor, their patient and a product with `units` in stock, committed."""
    return seed_stock(
        database,
        doctor_subject=DOCTOR_SUBJECT,
        doctor_email=DOCTOR_EMAIL,
        patient=PatientCreate(
            name="Penny Payer",
            email="penny.payer@example.com",
            phone="+1 555 0142",
            date_of_birth=date(1966, 6, 6),
        ),
        product=ProductCreate(
            sku=f"PAY-{uuid.uuid4().hex[:8]}",
            name="Blood glucose test strips",
            price_cents=price_cents,
            perishable=False,
        ),
        lots=[("PAY-LOT-1", 365, units)],
    )


def doctor_token(issuer: JwtIssuer) -> str:
    return issuer.token(DOCTOR_SUBJECT, role="doctor", email=DOCTOR_EMAIL, expires_in=900)


@contextmanager
def live_server(
    database: TestDatabase,
    issuer: JwtIssuer,
    stripe: LocalStripe,
    log_path: Path,
    *,
    workers: int = 2,
    access_log: bool = False,
) -> Iterator[str]:
    """The API on loopback, pointed at the database, the issuer and localstripe."""
    settings = {
        "DATABASE_URL": database.app_url,
        "OIDC_ISSUER": issuer.url,
        "OIDC_AUDIENCE": AUDIENCE,
        "STRIPE_API_BASE": stripe.base,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with live_api(settings, log_path, workers=workers, access_log=access_log) as base:
        yield base
