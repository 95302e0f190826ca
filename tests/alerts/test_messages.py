"""What staff alerts say: the topic, each new condition's summary and the link to the open
alerts; the template takes only lines of the expected shape."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session

from app import phi
from app.alerts.flows import MAX_LISTED, alerts_url, sync_alerts
from app.alerts.service import Condition, one_line
from app.models.status import AlertTopic
from app.notifications.templates import STAFF_TEMPLATES, TEMPLATES, TemplateError, render
from tests.fixtures.alerts import alert_messages, staff_member, subscribe
from tests.fixtures.settings import settings_env

URL = "http://127.0.0.1:8000/api/v1/alerts?topic=stock&state=open"


def context(**changes: str) -> dict[str, str]:
    return {
        "alert_topic": "stock",
        "alert_count": "1",
        "alert_lines": "Low stock: 2 sellable, par 10: SKU-1 Saline",
        "alerts_url": URL,
        **changes,
    }


def test_one_condition_is_named_in_the_subject_and_the_sms() -> None:
    rendered = render("staff_alerts", context())

    assert rendered.subject == "Portal stock alert: Low stock: 2 sellable, par 10: SKU-1 Saline"
    assert "A new stock condition needs attention" in rendered.text
    assert "- Low stock: 2 sellable, par 10: SKU-1 Saline" in rendered.text
    assert URL in rendered.text
    assert rendered.sms == "Portal stock alert: Low stock: 2 sellable, par 10: SKU-1 Saline"


def test_several_conditions_are_counted_and_listed() -> None:
    lines = "\n".join(f"Expiring: lot L{n}: SKU-{n} Gauze" for n in range(3))

    rendered = render("staff_alerts", context(alert_count="3", alert_lines=lines))

    assert rendered.subject == "Portal stock alerts: 3 new conditions"
    assert rendered.text.count("- Expiring: lot L") == 3
    assert rendered.sms.endswith("(+2 more)")


@pytest.mark.parametrize("topic", list(AlertTopic))
def test_every_topic_renders_within_two_sms_segments(topic: AlertTopic) -> None:
    rendered = render("staff_alerts", context(alert_topic=topic.value, alert_lines="x" * 300))
    assert len(rendered.sms) <= 320
    assert len(rendered.subject) <= 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alert_topic", "billing"),
        ("alert_count", "0"),
        ("alert_count", "two"),
        ("alert_count", "-1"),
        ("alert_lines", ""),
        ("alert_lines", "line\r\nBcc: eve@example.com"),
        ("alert_lines", "tab\there"),
        ("alert_lines", "x" * 301),
        ("alert_lines", "\n".join(["line"] * 26)),
        ("alert_lines", "first\n\nthird"),
        ("alerts_url", "https://evil.example/api/v1/alerts"),
    ],
)
def test_the_template_refuses_context_of_the_wrong_shape(field: str, value: str) -> None:
    with pytest.raises(TemplateError):
        render("staff_alerts", context(**{field: value}))


def test_staff_templates_stay_apart_from_the_patients_messages() -> None:
    assert "staff_alerts" in STAFF_TEMPLATES
    assert "staff_alerts" not in TEMPLATES


def test_the_link_follows_public_base_url() -> None:
    with settings_env(PUBLIC_BASE_URL="https://portal.clinic.example"):
        assert alerts_url(AlertTopic.RECONCILIATION) == (
            "https://portal.clinic.example/api/v1/alerts?topic=reconciliation&state=open"
        )


def test_one_line_flattens_and_cuts() -> None:
    assert one_line("a\nb\tc\u2028d  e") == "a b c d e"
    cut = one_line("y" * 400)
    assert len(cut) == 300 and cut.endswith("\u2026")


def test_a_big_sweep_lists_the_first_conditions_and_counts_the_rest(db: Session) -> None:
    admin, actor = staff_member(db)
    subscribe(db, actor, AlertTopic.STOCK)
    many = [Condition(f"low-stock:p{n:03d}", f"Low stock {n:03d}") for n in range(MAX_LISTED + 7)]

    result = sync_alerts(db, AlertTopic.STOCK, many)

    assert (result.opened, result.notifications) == (MAX_LISTED + 7, 1)
    (message,) = alert_messages(db, admin.id)
    sealed = message.payload["context"]
    context = json.loads(phi.decrypt(sealed, f"outbox.{message.dedupe_key}.context"))
    lines = context["alert_lines"].split("\n")
    assert len(lines) == MAX_LISTED + 1
    assert lines[-1] == "... and 7 more (see the open alerts)"
