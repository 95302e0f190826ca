"""A real uvicorn server on a committed database, for tests that need real HTTP from outside
(localstripe's webhook deliveries, concurrent clients), and the data it needs, seeded through
the services in committed transactions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from app.actor import Actor, Role
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.db import make_engine
from app.inventory import service as inventory
from app.inventory.repository import today
from app.inventory.schemas import LotReceive
from app.models import User
from app.patients.schemas import PatientCreate
from app.patients.service import create_patient
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import live_api
from tests.payments.local_stripe import WEBHOOK_SECRET, LocalStripe

DOCTOR_SUBJECT = "payments-doctor"


@dataclass(frozen=True)
class Seeded:
    doctor: Actor
    patient_id: uuid.UUID
    product_id: uuid.UUID
    price_cents: int


def seed(database: TestDatabase, *, units: int, price_cents: int = 1850) -> Seeded:
    """A doctor, their patient and a product with `units` in stock, committed."""
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            user = User(
                role="doctor",
                oidc_subject=DOCTOR_SUBJECT,
                email="payments-doctor@clinic.test",
                full_name="Dr Payments",
            )
            session.add(user)
            session.flush()
            doctor = Actor(subject=DOCTOR_SUBJECT, role=Role.DOCTOR, user_id=user.id)
            patient = create_patient(
                session,
                doctor,
                PatientCreate(
                    name="Penny Payer",
                    email="penny.payer@example.com",
                    phone="+1 555 0142",
                    date_of_birth=date(1966, 6, 6),
                ),
            )
            system = Actor.system("payments-test")
            product = catalog.create_product(
                session,
                system,
                ProductCreate(
                    sku=f"PAY-{uuid.uuid4().hex[:8]}",
                    name="Blood glucose test strips",
                    price_cents=price_cents,
                    perishable=False,
                ),
            )
            inventory.receive_lot(
                session,
                system,
                product.id,
                LotReceive(
                    lot_number="PAY-LOT-1",
                    expiration_date=today() + timedelta(days=365),
                    quantity=units,
                ),
            )
        return Seeded(doctor, patient.id, product.id, price_cents)
    finally:
        engine.dispose()


def doctor_token(issuer: JwtIssuer) -> str:
    return issuer.token(
        DOCTOR_SUBJECT, role="doctor", email="payments-doctor@clinic.test", expires_in=900
    )


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
