"""Demo data (idempotent, through the services so the audit log tells the story) and bulk data
for scale tests (COPY, fast)."""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.actor import Actor, Role
from app.audit import service as audit
from app.catalog import service as catalog
from app.catalog.schemas import ProductCreate
from app.inventory import service as inventory
from app.inventory.schemas import LotReceive, LotStatusChange
from app.models import Lot, Patient, Product, User
from app.models.status import CancellationReason
from app.orders import flows as order_flows
from app.orders import service as orders_service
from app.orders.schemas import OrderCreate, OrderLine
from app.patients import service as patients_service
from app.patients.schemas import PatientCreate
from devtools.identity import DEMO_USERS

SEED_ACTOR = Actor.system("seed")

# (sku, name, price_cents, par, reorder, prescription, perishable, lots: [(number, days, qty)])
DEMO_CATALOG: list[
    tuple[str, str, int, int, int, bool, bool, list[tuple[str, int | None, int]]]
] = [
    (
        "SEMA-0.25",
        "Semaglutide 0.25 mg pen",
        29900,
        10,
        20,
        True,
        True,
        [("SG24A01", 120, 12), ("SG24A02", 300, 18)],
    ),
    ("TIRZ-2.5", "Tirzepatide 2.5 mg vial", 34900, 8, 12, True, True, [("TZ25B11", 90, 6)]),
    (
        "INS-GLAR-100",
        "Insulin glargine 100 U/mL pen",
        8900,
        15,
        30,
        True,
        True,
        [("IG7781", 45, 10), ("IG7790", 200, 25)],
    ),
    (
        "B12-1000",
        "Cyanocobalamin 1000 mcg/mL vial",
        1800,
        20,
        50,
        True,
        True,
        [("B12-3301", 365, 60)],
    ),
    ("TDAP-1", "Tdap vaccine, single dose", 6500, 10, 10, True, True, [("TD-5521", 25, 4)]),
    (
        "FLU-26",
        "Influenza vaccine 2026-27, single dose",
        3500,
        30,
        50,
        True,
        True,
        [("FL26-001", 150, 80), ("FL26-002", 160, 40)],
    ),
    (
        "SYR-1ML",
        "Syringe 1 mL, 29G, box of 100",
        2400,
        10,
        20,
        False,
        False,
        [("SY-1001", None, 35)],
    ),
    ("ALC-PAD", "Alcohol prep pads, box of 200", 900, 25, 50, False, False, [("AP-2209", 900, 12)]),
    (
        "GLU-STRIP",
        "Glucose test strips, 50 count",
        2900,
        20,
        40,
        False,
        True,
        [("GS-8812", 400, 45)],
    ),
    (
        "GAUZE-4X4",
        "Sterile gauze 4x4 in, 25 count",
        1200,
        15,
        30,
        False,
        False,
        [("GZ-4410", None, 8)],
    ),
    ("SHARPS-1QT", "Sharps container 1 qt", 700, 5, 10, False, False, []),
    (
        "EPI-0.3",
        "Epinephrine 0.3 mg auto-injector",
        19900,
        6,
        6,
        True,
        True,
        [("EP-3A17", 20, 3), ("EP-3A22", 240, 5)],
    ),
]


def seed_demo(session: Session) -> dict[str, int]:
    """Create the demo users, catalog and lots that are missing; running it twice adds nothing."""
    created = {"users": 0, "products": 0, "lots": 0, "orders": 0}
    for role, person in DEMO_USERS.items():
        if session.scalar(select(User.id).where(User.email == person["email"])) is None:
            user = User(
                email=person["email"],
                role=role,
                full_name=person["name"],
                oidc_subject=person["email"],
                active=True,
            )
            session.add(user)
            session.flush()
            audit.record(
                session,
                SEED_ACTOR,
                "user.invited",
                "user",
                user.id,
                after={"email": user.email, "role": role},
            )
            created["users"] += 1
    today = datetime.now(UTC).date()
    for sku, name, price, par, reorder, rx, perishable, lots in DEMO_CATALOG:
        product = session.scalar(select(Product).where(Product.sku == sku))
        if product is None:
            product = catalog.create_product(
                session,
                SEED_ACTOR,
                ProductCreate(
                    sku=sku,
                    name=name,
                    price_cents=price,
                    par_level=par,
                    reorder_quantity=reorder,
                    requires_prescription=rx,
                    perishable=perishable,
                ),
            )
            created["products"] += 1
        for number, days, quantity in lots:
            exists = session.scalar(
                select(Lot.id).where(Lot.product_id == product.id, Lot.lot_number == number)
            )
            if exists is None:
                expiry = today + timedelta(days=days) if days is not None else None
                inventory.receive_lot(
                    session,
                    SEED_ACTOR,
                    product.id,
                    LotReceive(lot_number=number, expiration_date=expiry, quantity=quantity),
                )
                created["lots"] += 1
    # One quarantined lot, so the demo shows a lot that does not count as sellable.
    held = session.scalar(select(Lot).where(Lot.lot_number == "IG7781"))
    if held is not None and held.status == "available" and created["lots"]:
        inventory.change_status(
            session,
            SEED_ACTOR,
            held.id,
            LotStatusChange(status="quarantined", reason="Cold-chain excursion under review"),
        )
    created["orders"] = _seed_demo_orders(session)
    return created


# Synthetic people only.
DEMO_PATIENTS = [
    ("Avery Example", "avery.example@example.com", "+1 555 0101", date(1978, 4, 12)),
    ("Blake Sample", "blake.sample@example.com", "+1 555 0102", date(1991, 9, 30)),
    ("Casey Placeholder", "casey.placeholder@example.com", "+1 555 0103", date(1965, 1, 7)),
]


def _seed_demo_orders(session: Session) -> int:
    """Demo patients of the demo doctor, with an order in each state (once)."""
    doctor = session.scalar(select(User).where(User.email == DEMO_USERS["doctor"]["email"]))
    if doctor is None or session.scalar(select(Patient.id).where(Patient.doctor_id == doctor.id)):
        return 0
    actor = Actor(
        subject=doctor.oidc_subject or doctor.email or "",
        role=Role.DOCTOR,
        user_id=doctor.id,
        email=doctor.email,
    )
    patients = [
        patients_service.create_patient(
            session,
            actor,
            PatientCreate(name=name, email=email, phone=phone, date_of_birth=born),
        )
        for name, email, phone, born in DEMO_PATIENTS
    ]
    skus = {p.sku: p.id for p in session.scalars(select(Product))}

    def order(
        patient_index: int, lines: list[tuple[str, int]], note: str | None = None
    ) -> uuid.UUID:
        data = OrderCreate(
            patient_id=patients[patient_index].id,
            items=[OrderLine(product_id=skus[sku], quantity=qty) for sku, qty in lines],
            note=note,
        )
        return orders_service.create_order(session, actor, data).order.id

    order(0, [("SEMA-0.25", 1), ("SYR-1ML", 1)], note="Start at 0.25 mg weekly")
    paid = order(1, [("B12-1000", 2)])
    orders_service.mark_paid(session, SEED_ACTOR, paid)
    shipped = order(2, [("GLU-STRIP", 2), ("ALC-PAD", 1)])
    orders_service.mark_paid(session, SEED_ACTOR, shipped)
    orders_service.fulfil_order(session, SEED_ACTOR, shipped)
    dropped = order(0, [("FLU-26", 1)])
    order_flows.cancel_order(
        session, actor, dropped, CancellationReason.PATIENT_REQUEST, "Changed their mind"
    )
    return 4


@dataclass(frozen=True)
class ScaleResult:
    products: int
    lots: int
    movements: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return (self.products + self.lots + self.movements) / self.seconds if self.seconds else 0.0


def seed_scale(
    url: str,
    *,
    products: int,
    lots: int,
    batch: int = 10_000,
    progress: Callable[[int], None] | None = None,
    seed: int = 7,
) -> ScaleResult:
    """Bulk-load synthetic products and lots (each lot with its receipt movement) with COPY.

    Lots are spread evenly over the new products. One audit row records the load.
    """
    rng = random.Random(seed)
    started = datetime.now(UTC)
    run = uuid.uuid4().hex[:6].upper()
    today = date.today()
    product_ids = [uuid.uuid4() for _ in range(products)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY products (id, sku, name, description, price_cents, par_level, reorder_quantity,"
            " requires_prescription, perishable) FROM STDIN"
        ) as copy:
            for i, pid in enumerate(product_ids):
                copy.write_row(
                    (
                        pid,
                        f"SCALE-{run}-{i:07d}",
                        f"Scale product {i}",
                        "",
                        rng.randint(100, 50_000),
                        rng.randint(0, 50),
                        rng.randint(0, 100),
                        rng.random() < 0.4,
                        rng.random() < 0.6,
                    )
                )
                if progress and (i + 1) % batch == 0:
                    progress(batch)
        if progress:
            progress(products % batch)
        written = 0
        while written < lots:
            n = min(batch, lots - written)
            lot_rows = io.StringIO()
            move_rows = io.StringIO()
            for j in range(written, written + n):
                lid = uuid.uuid4()
                quantity = rng.randint(1, 200)
                expiry = today + timedelta(days=rng.randint(15, 900))
                lot_rows.write(
                    f"{lid}\t{product_ids[j % products]}\tL{run}{j:08d}\t{expiry}\t{quantity}\n"
                )
                move_rows.write(
                    f"{uuid.uuid4()}\t{lid}\t{quantity}\t0\treceipt\tsystem:seed-scale\n"
                )
            with cur.copy(
                "COPY lots (id, product_id, lot_number, expiration_date, quantity_on_hand)"
                " FROM STDIN"
            ) as copy:
                copy.write(lot_rows.getvalue())
            with cur.copy(
                "COPY stock_movements (id, lot_id, delta_on_hand, delta_reserved, reason,"
                " actor_subject) FROM STDIN"
            ) as copy:
                copy.write(move_rows.getvalue())
            written += n
            if progress:
                progress(n)
        conn.commit()
    seconds = (datetime.now(UTC) - started).total_seconds()
    return ScaleResult(products=products, lots=lots, movements=lots, seconds=seconds)
