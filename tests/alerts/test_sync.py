"""sync_alerts: a condition opens once, persists silently, clears, and a return is a new alert;
its subscribers are told once per opening, through the outbox."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import phi
from app.alerts.flows import sync_alerts
from app.alerts.service import (
    AlertSync,
    Condition,
    rotate_subscription_keys,
    subscriptions_of,
)
from app.models import AlertSubscription
from app.models.base import utcnow
from app.models.status import AlertTopic, StaffRole
from app.notifications.service import EMAIL_TOPIC, SMS_TOPIC
from tests.fixtures.alerts import alert_messages, alert_rows, staff_member, subscribe
from tests.fixtures.patients import second_phi_key

LOW = Condition("low-stock:p1", "Low stock: SKU-1 Widget, 2 sellable, par 10", {"sellable": 2})
EXPIRING = Condition("expiring:l1", "Lot L1 of SKU-2 expires on 2026-12-24", {"lot": "L1"})


def counts(sync: AlertSync) -> tuple[int, int, int]:
    return sync.opened, sync.cleared, sync.still_open


def test_a_condition_opens_once_stays_open_silently_clears_and_returns_as_a_new_alert(
    db: Session,
) -> None:
    topic = AlertTopic.STOCK
    assert counts(sync_alerts(db, topic, [LOW])) == (1, 0, 0)
    assert counts(sync_alerts(db, topic, [LOW, EXPIRING])) == (1, 0, 1)
    assert counts(sync_alerts(db, topic, [LOW, EXPIRING])) == (0, 0, 2)
    cleared = sync_alerts(db, topic, [EXPIRING])
    assert counts(cleared) == (0, 1, 1)
    assert cleared.cleared_keys == ("low-stock:p1",)
    back = sync_alerts(db, topic, [LOW, EXPIRING])
    assert counts(back) == (1, 0, 1)
    assert back.opened_keys == ("low-stock:p1",)

    rows = alert_rows(db, topic, LOW.key)
    assert len(rows) == 2
    first, second = rows
    assert first.cleared_at is not None and second.cleared_at is None
    assert second.id != first.id
    assert (second.summary, second.details) == (LOW.summary, {"sellable": 2})


def test_topics_are_independent_and_an_empty_sweep_clears_everything_of_its_topic(
    db: Session,
) -> None:
    sync_alerts(db, AlertTopic.STOCK, [LOW])
    sync_alerts(db, AlertTopic.RECONCILIATION, [Condition("missed-webhook:pi_1", "Missed")])

    assert counts(sync_alerts(db, AlertTopic.STOCK, [])) == (0, 1, 0)
    assert [a.cleared_at is None for a in alert_rows(db, AlertTopic.RECONCILIATION)] == [True]


def test_a_key_prefix_limits_the_sync_to_its_own_conditions(db: Session) -> None:
    topic = AlertTopic.DATA_QUALITY
    sync_alerts(db, topic, [Condition("raw_lots:negative", "Negative stock")], key_prefix="raw_")
    marts = sync_alerts(db, topic, [Condition("marts_x:phi", "PHI column")], key_prefix="marts_")
    assert counts(marts) == (1, 0, 0)  # the raw_ alert is outside this sync: not cleared

    assert counts(sync_alerts(db, topic, [], key_prefix="raw_")) == (0, 1, 0)
    assert [a.cleared_at is None for a in alert_rows(db, topic, "marts_x:phi")] == [True]
    with pytest.raises(ValueError, match="outside the scope"):
        sync_alerts(db, topic, [Condition("other:x", "x")], key_prefix="raw_")


def test_details_are_stored_as_json_with_dates_and_ids_as_text(db: Session) -> None:
    product_id = uuid.uuid4()
    condition = Condition(
        "expiring:l9",
        "Lot L9 expires soon",
        {"product_id": product_id, "expires": date(2027, 1, 2), "units": 3, "cover": 1.5},
    )
    sync_alerts(db, AlertTopic.STOCK, [condition])

    (row,) = alert_rows(db, AlertTopic.STOCK, "expiring:l9")
    assert row.details == {
        "product_id": str(product_id),
        "expires": "2027-01-02",
        "units": 3,
        "cover": 1.5,
    }


@pytest.mark.parametrize(
    ("key", "summary"),
    [
        ("", "empty key"),
        ("has space", "a key with a space"),
        ("k" * 201, "a key too long"),
        ("low-stock:ü", "a key that is not ASCII"),
        ("ok", ""),
        ("ok", "two\nlines"),
        ("ok", "x" * 301),
    ],
)
def test_a_malformed_condition_is_refused(key: str, summary: str) -> None:
    with pytest.raises(ValueError, match="condition"):
        Condition(key, summary)


@pytest.mark.parametrize("value", [object(), float("nan"), b"bytes", {("a", "b"): 1}])
def test_details_that_json_cannot_hold_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="JSON-safe"):
        Condition("ok", "fine", {"value": value})


def test_two_conditions_with_one_key_are_refused_and_nothing_is_written(db: Session) -> None:
    with pytest.raises(ValueError, match="share the key"):
        sync_alerts(db, AlertTopic.STOCK, [LOW, Condition(LOW.key, "again")])
    assert alert_rows(db, AlertTopic.STOCK) == []


def test_the_database_refuses_a_second_open_alert_of_one_key(db: Session) -> None:
    sync_alerts(db, AlertTopic.STOCK, [LOW])
    with pytest.raises(IntegrityError, match="uq_alerts_topic_key_open"), db.begin_nested():
        db.execute(
            text(
                "INSERT INTO alerts (id, topic, key, summary) VALUES"
                " (gen_random_uuid(), 'stock', :key, 'copy')"
            ),
            {"key": LOW.key},
        )


def test_subscribers_are_told_once_per_opening_by_email_and_sms(db: Session) -> None:
    admin, actor = staff_member(db, StaffRole.ADMIN)
    subscribe(db, actor, AlertTopic.STOCK, sms_to="+1 555 010 0142")

    opened = sync_alerts(db, AlertTopic.STOCK, [LOW, EXPIRING])
    assert opened.notifications == 2
    messages = alert_messages(db, admin.id)
    assert sorted(m.topic for m in messages) == [EMAIL_TOPIC, SMS_TOPIC]
    for message in messages:
        context = json.loads(
            phi.decrypt(message.payload["context"], f"outbox.{message.dedupe_key}.context")
        )
        assert context["alert_count"] == "2"
        assert context["alert_lines"].split("\n") == [LOW.summary, EXPIRING.summary]
    sms = next(m for m in messages if m.topic == SMS_TOPIC)
    assert phi.decrypt(sms.payload["to"], f"outbox.{sms.dedupe_key}.to") == "+15550100142"

    for _ in range(3):  # persisting: nothing more
        assert sync_alerts(db, AlertTopic.STOCK, [LOW, EXPIRING]).notifications == 0
    assert len(alert_messages(db, admin.id)) == 2

    sync_alerts(db, AlertTopic.STOCK, [EXPIRING])  # LOW clears: no notice
    assert len(alert_messages(db, admin.id)) == 2
    back = sync_alerts(db, AlertTopic.STOCK, [LOW, EXPIRING])  # LOW returns: told again
    assert back.notifications == 2
    assert len(alert_messages(db, admin.id)) == 4


def test_only_active_subscribers_whose_role_may_hear_the_topic_are_told(db: Session) -> None:
    admin, admin_actor = staff_member(db, StaffRole.ADMIN)
    doctor, doctor_actor = staff_member(db, StaffRole.DOCTOR)
    gone, gone_actor = staff_member(db, StaffRole.ADMIN)
    bystander, _ = staff_member(db, StaffRole.ADMIN)
    subscribe(db, admin_actor, AlertTopic.STOCK, AlertTopic.RECONCILIATION)
    subscribe(db, doctor_actor, AlertTopic.STOCK)
    subscribe(db, gone_actor, AlertTopic.STOCK)
    gone.active = False
    # A doctor who was an admin keeps a reconciliation row the API would no longer accept.
    promoted, promoted_actor = staff_member(db, StaffRole.ADMIN)
    subscribe(db, promoted_actor, AlertTopic.RECONCILIATION)
    promoted.role = StaffRole.DOCTOR
    db.commit()

    sync_alerts(db, AlertTopic.STOCK, [LOW])
    sync_alerts(db, AlertTopic.RECONCILIATION, [Condition("missed-webhook:pi_9", "Missed")])

    assert len(alert_messages(db, admin.id)) == 2
    assert len(alert_messages(db, doctor.id)) == 1
    assert alert_messages(db, gone.id) == []
    assert alert_messages(db, bystander.id) == []
    assert alert_messages(db, promoted.id) == []


def test_a_sync_with_no_subscribers_opens_alerts_and_queues_nothing(db: Session) -> None:
    result = sync_alerts(db, AlertTopic.PHARMACY, [Condition("pharmacy:down", "Pharmacy down")])
    assert (result.opened, result.notifications) == (1, 0)


def test_clearing_never_dates_an_alert_before_it_opened(db: Session) -> None:
    now = utcnow()
    sync_alerts(db, AlertTopic.STOCK, [LOW], now=now)
    sync_alerts(db, AlertTopic.STOCK, [], now=now - timedelta(hours=1))
    (row,) = alert_rows(db, AlertTopic.STOCK, LOW.key)
    assert row.cleared_at == row.opened_at


def test_key_rotation_reseals_the_sms_numbers_and_alerts_still_reach_them(db: Session) -> None:
    """`portal keys rotate` covers the staff's SMS numbers: after it, the old key can go."""
    admin, actor = staff_member(db, StaffRole.ADMIN)
    subscribe(db, actor, AlertTopic.STOCK, sms_to="+15550100155")
    _, other = staff_member(db, StaffRole.ADMIN)
    subscribe(db, other, AlertTopic.STOCK, email=False, sms_to="+15550100156")

    with second_phi_key():
        assert rotate_subscription_keys(db, batch=1) == 2
        assert rotate_subscription_keys(db) == 0  # resumable: nothing left
        db.commit()
        sealed = db.scalars(select(AlertSubscription.sms_to_encrypted)).all()
        assert all(value and value.startswith("enc1:k2:") for value in sealed)
        assert subscriptions_of(db, admin.id)[AlertTopic.STOCK].sms_to == "+15550100155"
        assert sync_alerts(db, AlertTopic.STOCK, [LOW]).notifications == 3
