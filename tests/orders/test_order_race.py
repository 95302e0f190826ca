"""No oversell under real concurrency: 200 one-unit orders race for 50 units over HTTP.

A real uvicorn server with two worker processes (two connection pools, no shared Python state)
serves the API on a committed copy of the database; 200 orders from one doctor arrive at once
from 50 threads. Exactly 50 may win and the rest must get a clean 409; the lot counters must
agree with the stock ledger; and the winners must have drained the lots first-expiry-first-out.

It also guards against a worker hanging under this load: a sync endpoint's response is
validated in the 40-thread pool while its transaction still holds the lot locks, so requests
waiting on those locks must never be allowed to occupy every thread (`app.db.DbSession`).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

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

DOCTOR_SUBJECT = "race-doctor"
REQUESTS = 200
THREADS = 50
# (lot number, expires in days, units): received out of expiry order on purpose, so FEFO has
# to follow the dates rather than the order the lots were created in.
LOTS = [("RACE-B60", 60, 15), ("RACE-A30", 30, 10), ("RACE-C90", 90, 25)]
STOCK = sum(units for _, _, units in LOTS)

Outcome = tuple[int, dict[str, Any]]


def _seed(database: TestDatabase) -> tuple[uuid.UUID, uuid.UUID, dict[uuid.UUID, date]]:
    """Doctor, patient, product and its three lots, committed. -> patient, product, lot expiry."""
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            doctor = User(
                role="doctor",
                oidc_subject=DOCTOR_SUBJECT,
                email="race-doctor@clinic.test",
                full_name="Dr Race",
            )
            session.add(doctor)
            session.flush()
            as_doctor = Actor(subject=DOCTOR_SUBJECT, role=Role.DOCTOR, user_id=doctor.id)
            patient = create_patient(
                session,
                as_doctor,
                PatientCreate(
                    name="Rae Condition",
                    email="rae.condition@example.com",
                    phone="+1 555 0100",
                    date_of_birth=date(1970, 1, 1),
                ),
            )
            system = Actor.system("race-test")
            product = catalog.create_product(
                session,
                system,
                ProductCreate(
                    sku="RACE-INSULIN", name="Insulin pen", price_cents=2500, perishable=True
                ),
            )
            expiry = {}
            for lot_number, days, units in LOTS:
                lot = inventory.receive_lot(
                    session,
                    system,
                    product.id,
                    LotReceive(
                        lot_number=lot_number,
                        expiration_date=today() + timedelta(days=days),
                        quantity=units,
                    ),
                )
                expiry[lot.id] = lot.expiration_date
        return patient.id, product.id, expiry
    finally:
        engine.dispose()
