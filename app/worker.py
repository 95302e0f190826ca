"""The worker: what runs beside the API, for `portal worker` and for schedulers (Dagster).

One poll (`run_once`) delivers the outbox through `HANDLERS`, seals committed audit rows into
the hash chain, and runs the periodic jobs that are due on its `Schedule`: anchoring the
chain's head every AUDIT_ANCHOR_EVERY_SECONDS, and pruning closed rate-limit windows and system
log records past their retention every HOUSEKEEPING_EVERY_SECONDS. `run_forever` polls until
interrupted. Scheduled business operations (expiring unpaid orders, stock alerts,
reconciliation) are Dagster's (`pipelines/`); the worker is the low-latency path of what the
outbox must send. Each step commits its own short transactions; nothing here prints: callers
report the `Poll` they get back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.audit.anchors import AnchorConflict, anchor_head
from app.audit.service import seal_in_own_transaction
from app.config import Settings, get_settings
from app.integrations.stripe.refunds import REFUND_TOPIC
from app.notifications.service import EMAIL_TOPIC, SMS_TOPIC, deliver_email, deliver_sms
from app.outbox.service import DeliveryReport, Handler, deliver_due
from app.payments.flows import deliver_refund
from app.ratelimit import prune
from app.system_logs import service as system_log

# Outbox topic -> the call that delivers a message of that topic.
HANDLERS: Mapping[str, Handler] = {
    REFUND_TOPIC: deliver_refund,
    EMAIL_TOPIC: deliver_email,
    SMS_TOPIC: deliver_sms,
}

# How often the worker prunes closed rate-limit windows.
HOUSEKEEPING_EVERY_SECONDS = 60


def worker_sessions(engine: Engine) -> sessionmaker[Session]:
    """The sessions the worker's steps expect: objects stay readable after their commit."""
    return sessionmaker(engine, expire_on_commit=False)


@dataclass
class Schedule:
    """When the periodic jobs are next due (`time.monotonic()`); a new schedule has them all
    due, so the first poll anchors and prunes."""

    next_housekeeping: float = 0.0
    next_anchor: float = 0.0


@dataclass(frozen=True)
class Housekeeping:
    pruned: int  # closed rate-limit windows deleted
    system_log_pruned: int = 0  # system log records past SYSTEM_LOG_RETENTION_DAYS deleted


@dataclass(frozen=True)
class Poll:
    """What one poll did."""

    outbox: DeliveryReport
    sealed: int
    housekeeping: Housekeeping | None = None  # None when it was not due
    anchor_failure: Exception | None = None  # the anchor was due and could not be written

    @property
    def busy(self) -> bool:
        """Whether the poll found work (the loop polls again at once instead of sleeping)."""
        return bool(self.outbox.delivered or self.outbox.retried or self.outbox.dead or self.sealed)


def prune_rate_limit_windows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session, session.begin():
        return prune(session.connection())


def prune_system_log(sessions: sessionmaker[Session], retention_days: int) -> int:
    with sessions() as session, session.begin():
        return system_log.prune(session, retention_days=retention_days)


def keep_house(sessions: sessionmaker[Session], settings: Settings | None = None) -> Housekeeping:
    settings = settings or get_settings()
    return Housekeeping(
        pruned=prune_rate_limit_windows(sessions),
        system_log_pruned=prune_system_log(sessions, settings.system_log_retention_days),
    )


def run_once(
    sessions: sessionmaker[Session],
    schedule: Schedule | None = None,
    *,
    handlers: Mapping[str, Handler] = HANDLERS,
    settings: Settings | None = None,
) -> Poll:
    """One poll: the periodic jobs that are due on `schedule` (all of them without one), the
    outbox's due messages, then sealing. A failed anchor is reported, and deliveries go on."""
    schedule = schedule if schedule is not None else Schedule()
    settings = settings or get_settings()
    housekeeping = None
    if time.monotonic() >= schedule.next_housekeeping:
        schedule.next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY_SECONDS
        housekeeping = keep_house(sessions, settings)
    report = deliver_due(sessions, handlers)
    sealed = seal_in_own_transaction(sessions)
    anchor_failure: Exception | None = None
    anchor_every = settings.audit_anchor_every_seconds
    if anchor_every and time.monotonic() >= schedule.next_anchor:
        schedule.next_anchor = time.monotonic() + anchor_every
        try:
            with sessions() as session:  # sealed just above
                anchor_head(session, settings.anchor_dir)
        except (AnchorConflict, OSError) as exc:
            anchor_failure = exc
    return Poll(
        outbox=report, sealed=sealed, housekeeping=housekeeping, anchor_failure=anchor_failure
    )


def run_forever(
    sessions: sessionmaker[Session],
    *,
    interval: float = 1.0,
    on_poll: Callable[[Poll], None] = lambda poll: None,
    handlers: Mapping[str, Handler] = HANDLERS,
) -> None:
    """Poll until interrupted (KeyboardInterrupt reaches the caller), sleeping `interval`
    seconds after a poll that found nothing to do."""
    schedule = Schedule()
    while True:
        poll = run_once(sessions, schedule, handlers=handlers)
        on_poll(poll)
        if not poll.busy:
            time.sleep(interval)
