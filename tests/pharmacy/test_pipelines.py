"""The Dagster sensor delivers due submissions and the schedule polls statuses, on a committed
database with the demo data (the definitions as `workspace.yaml` loads them)."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.actor import Actor
from app.db import make_engine
from app.models import Order, OrderItem, PharmacySubmission, Product
from app.models.status import OrderStatus
from app.orders import flows as order_flows
from app.pharmacy import service
from app.pharmacy.schemas import PharmacyCreate
from pipelines.pharmacy.jobs import (
    deliver_pharmacy_submissions_job,
    pharmacy_submissions_due,
    poll_pharmacy_statuses_job,
    poll_pharmacy_statuses_schedule,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.pharmacy_double import NAME, PharmacyState
from tests.fixtures.pipelines import pipeline_resources, seed_demo_data
from tests.fixtures.settings import settings_env


def _pay_a_prescription_order(database: TestDatabase) -> uuid.UUID:
    """A demo pending order made a prescription order and paid, with a default pharmacy."""
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            actor = Actor.system("test")
            service.create_pharmacy(
                session,
                actor,
                PharmacyCreate(
                    name="Reference",
                    connector=NAME,
                    base_url="http://127.0.0.1:9/fhir",
                    is_default=True,
                ),
            )
            order = session.scalar(
                select(Order).where(Order.status == OrderStatus.PENDING).order_by(Order.created_at)
            )
            assert order is not None, "the demo data has a pending order"
            session.execute(
                update(Product)
                .where(
                    Product.id.in_(
                        select(OrderItem.product_id).where(OrderItem.order_id == order.id)
                    )
                )
                .values(requires_prescription=True)
            )
            order_flows.mark_paid(session, actor, order)
            return order.id
    finally:
        engine.dispose()


def _statuses(database: TestDatabase, order_id: uuid.UUID) -> list[str]:
    engine = make_engine(database.app_url, pool_size=1)
    try:
        with Session(engine) as session:
            return list(
                session.scalars(
                    select(PharmacySubmission.status).where(PharmacySubmission.order_id == order_id)
                )
            )
    finally:
        engine.dispose()


def test_the_pharmacy_definitions_are_assembled_in_the_code_location() -> None:
    # First in this module: loading the code location after a test instance was torn down
    # makes Dagster reach for that instance's (deleted) storage.
    from pipelines.definitions import defs

    repository = defs.get_repository_def()
    assert {"deliver_pharmacy_submissions_job", "poll_pharmacy_statuses_job"} <= {
        job.name for job in repository.get_all_jobs()
    }
    assert "pharmacy_submissions_due" in {s.name for s in repository.sensor_defs}
    assert "poll_pharmacy_statuses_every_2_minutes" in {s.name for s in repository.schedule_defs}


def test_the_sensor_delivers_due_submissions_and_the_schedule_polls_them(
    fresh_db: TestDatabase, tmp_path: Path, pharmacy_double: PharmacyState
) -> None:
    seed_demo_data(fresh_db)
    resources = pipeline_resources(fresh_db, tmp_path)
    order_id = _pay_a_prescription_order(fresh_db)
    assert _statuses(fresh_db, order_id) == ["pending"]

    with dg.instance_for_test() as instance:
        database = {"database": resources["database"]}
        assert (pharmacy_submissions_due.minimum_interval_seconds or 0) <= 30
        with dg.build_sensor_context(instance=instance, resources=database) as context:
            tick = pharmacy_submissions_due(context)
        assert isinstance(tick, dg.SensorResult) and len(tick.run_requests or []) == 1

        result = deliver_pharmacy_submissions_job.execute_in_process(resources=resources)
        assert result.success
        assert result.output_for_node("deliver_pharmacy_submissions") == 1
        assert _statuses(fresh_db, order_id) == ["accepted"]
        assert len(pharmacy_double.received) == 1

        # Nothing due any more: the sensor skips.
        with dg.build_sensor_context(instance=instance, resources=database) as context:
            quiet = pharmacy_submissions_due(context)
        assert isinstance(quiet, dg.SensorResult) and not quiet.run_requests

        schedule_context = dg.build_schedule_context(instance=instance)
        assert (
            len(poll_pharmacy_statuses_schedule.evaluate_tick(schedule_context).run_requests or [])
            == 1
        )
        (external_id,) = pharmacy_double.statuses
        pharmacy_double.dispense(external_id)
        with settings_env(PHARMACY_POLL_INTERVAL_SECONDS="0"):
            polled = poll_pharmacy_statuses_job.execute_in_process(resources=resources)
        assert polled.success and polled.output_for_node("poll_pharmacy_statuses") == 1
        assert _statuses(fresh_db, order_id) == ["dispensed"]
