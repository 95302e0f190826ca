from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.alerts import service
from app.alerts.schemas import (
    AlertOut,
    Channels,
    Subscriptions,
    SubscriptionsOut,
    SubscriptionsUpdate,
)
from app.db import DbSession
from app.errors import Conflict, Forbidden, problem_responses
from app.models import Alert, User
from app.models.status import AlertState, AlertTopic
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor, StaffActor

router = APIRouter(tags=["alerts"])


def _subscriptions_out(user: User, current: dict[AlertTopic, service.Channels]) -> SubscriptionsOut:
    return SubscriptionsOut(
        subscriptions=Subscriptions.model_validate(
            {
                topic.value: {"email": channels.email, "sms_to": channels.sms_to}
                for topic, channels in current.items()
            }
        ),
        available_topics=service.topics_for(user.role),
        email=user.email,
    )


@router.get("/users/me/alert-subscriptions", response_model=SubscriptionsOut)
def my_alert_subscriptions(actor: StaffActor, session: DbSession) -> SubscriptionsOut:
    """The alert topics you hear about, and how."""
    return _subscriptions_out(*service.my_subscriptions(session, actor))


@router.put(
    "/users/me/alert-subscriptions",
    response_model=SubscriptionsOut,
    responses=problem_responses(Forbidden, Conflict),
)
def replace_my_alert_subscriptions(
    data: SubscriptionsUpdate, actor: StaffActor, session: DbSession
) -> SubscriptionsOut:
    """Replace the alert topics you hear about. Admins may name every topic, doctors `stock`
    only (another topic: 403). E-mail goes to your account's address (none on the account:
    409). You are told when a condition starts, not while it persists."""
    wanted = {
        AlertTopic(topic): service.Channels(email=channels.email, sms_to=channels.sms_to)
        for topic, channels in (
            (name, getattr(data.subscriptions, name)) for name in Subscriptions.model_fields
        )
        if isinstance(channels, Channels)
    }
    return _subscriptions_out(*service.replace_subscriptions(session, actor, wanted))


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut(
        id=alert.id,
        topic=AlertTopic(alert.topic),
        key=alert.key,
        summary=alert.summary,
        details=alert.details,
        state=service.state_of(alert),
        opened_at=alert.opened_at,
        cleared_at=alert.cleared_at,
    )


@router.get("/alerts", response_model=Page[AlertOut])
def list_alerts(
    actor: AdminActor,
    session: DbSession,
    topic: Annotated[AlertTopic | None, Query()] = None,
    state: Annotated[AlertState | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertOut]:
    """Alerts to staff, newest first; `?state=open` for the conditions that still hold."""
    alerts = service.list_alerts(
        session, actor, topic=topic, state=state, limit=limit, cursor=cursor
    )
    return alerts.map(_alert_out).page()
