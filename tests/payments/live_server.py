"""A real uvicorn server on a committed database, for tests that need real HTTP from outside
(localstripe's webhook deliveries, concurrent clients), and the data it needs, seeded through
the services in committed transactions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
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
from tests.payments.local_stripe import WEBHOOK_SECRET, LocalStripe, free_port

UVICORN = str(Path(sys.executable).parent / "uvicorn")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    """uvicorn on 127.0.0.1 (a free port), pointed at the database, the issuer and localstripe;
    stopped (and reaped) however the test ends."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "OIDC_", "STRIPE_"))
    }
    env.update(
        DATABASE_URL=database.app_url,
        OIDC_ISSUER=issuer.url,
        OIDC_AUDIENCE=AUDIENCE,
        STRIPE_API_BASE=stripe.base,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        ENVIRONMENT="test",
    )
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                UVICORN,
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--access-log" if access_log else "--no-access-log",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60  # importing the app is slow on a busy machine
            while True:
                assert process.poll() is None, f"server exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"server not up:\n{log_path.read_text()}"
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
