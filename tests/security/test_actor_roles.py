"""The portal's own actors (workers, pipelines, a patient's checkout link) are never admins, and
each sees what the visibility rules say: a doctor their own patients and orders, the others all."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy.orm import Session

from app.actor import Actor, Role
from app.checkout import service as checkout
from app.models import CheckoutLink, Order, User
from app.models.base import utcnow
from app.orders.service import visible_orders
from app.patients.schemas import PatientCreate
from app.patients.service import create_patient, visible_patients

ADMIN = Actor(subject="admin-roles", role=Role.ADMIN)


def _link(order_id: uuid.UUID) -> CheckoutLink:
    return CheckoutLink(
        id=uuid.uuid4(),
        order_id=order_id,
        token_hash=uuid.uuid4().hex,
        expires_at=utcnow() + timedelta(days=1),
        issued_by="test",
        failed_attempts=0,
    )


def test_is_admin_is_true_for_the_admin_role_only() -> None:
    link = _link(uuid.uuid4())
    assert ADMIN.is_admin
    assert not Actor(subject="doctor-roles", role=Role.DOCTOR).is_admin
    assert not Actor.system("order-expiry").is_admin
    assert not checkout.link_actor(link, "203.0.113.9").is_admin


def test_a_checkout_link_acts_with_a_role_of_its_own_named_after_the_link() -> None:
    link = _link(uuid.uuid4())
    actor = checkout.link_actor(link, "203.0.113.9")
    assert (actor.subject, actor.role, actor.client_address) == (
        f"checkout-link:{link.id}",
        Role.CHECKOUT_LINK,
        "203.0.113.9",
    )
    # What the audit log stores in actor_role (a column of 16 characters).
    assert str(actor.role) == "checkout-link" and len(str(actor.role)) <= 16


@pytest.fixture
def two_practices(db: Session) -> tuple[Actor, set[uuid.UUID], set[uuid.UUID]]:
    """Two doctors with a patient and an order each. Returns the first doctor, then every
    patient id and every order id created."""
    doctors = []
    for n in range(2):
        user = User(role="doctor", oidc_subject=f"roles-doctor-{n}-{uuid.uuid4().hex[:6]}")
        db.add(user)
        db.flush()
        doctors.append(Actor(subject=user.oidc_subject or "", role=Role.DOCTOR, user_id=user.id))
    patient_ids = set()
    for n, doctor in enumerate(doctors):
        patient = create_patient(
            db,
            doctor,
            PatientCreate(
                name=f"Patient {n}",
                email=f"roles-{n}-{uuid.uuid4().hex[:6]}@example.org",
                phone="+1 555 0100",
                date_of_birth=date(1980, 1, 1 + n),
            ),
        )
        patient_ids.add(patient.id)
    order_ids = set()
    for patient_id in patient_ids:
        order = Order(id=uuid.uuid4(), patient_id=patient_id, expires_at=utcnow())
        db.add(order)
        order_ids.add(order.id)
    db.flush()
    return doctors[0], patient_ids, order_ids


def test_system_and_link_actors_see_every_patient_and_order_as_before(
    db: Session, two_practices: tuple[Actor, set[uuid.UUID], set[uuid.UUID]]
) -> None:
    doctor, patient_ids, order_ids = two_practices
    link = _link(next(iter(order_ids)))
    # How the link acted before it had a role of its own.
    link_as_before = Actor(subject=f"checkout-link:{link.id}", role=Role.SYSTEM)

    def seen(actor: Actor) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        patients = {p.id for p in db.scalars(visible_patients(actor))} & patient_ids
        orders = {o.id for o in db.scalars(visible_orders(actor))} & order_ids
        return patients, orders

    everything = (patient_ids, order_ids)
    assert seen(ADMIN) == everything
    assert seen(Actor.system("order-expiry")) == everything
    assert seen(link_as_before) == everything
    assert seen(checkout.link_actor(link, None)) == everything
    # The doctor: their own patient and that patient's order only.
    own_patients, own_orders = seen(doctor)
    assert len(own_patients) == len(own_orders) == 1
    assert {db.get_one(Order, order_id).patient_id for order_id in own_orders} == own_patients


def test_only_a_doctor_is_confined_to_their_own_patients() -> None:
    assert {role for role in Role if not Actor(subject="x", role=role).sees_all_patients} == {
        Role.DOCTOR
    }
