"""Talking to pharmacies: delivery of due submissions, status polls, connection tests and the
cancel an order's cancellation sends first. Each call to a pharmacy happens with no row lock
held (claims are short transactions of their own); every exchange is recorded.

`deliver_due` and `poll_statuses` take a `sessionmaker` and commit their own short
transactions (the API, the CLI, Dagster and the tests call them the same way);
`test_connection` and `tell_pharmacies_order_cancelled` run in the caller's request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.alerts.flows import sync_alerts
from app.audit import service as audit
from app.config import get_settings
from app.models.base import utcnow
from app.models.status import (
    AlertTopic,
    PharmacyExchangeOutcome,
    PharmacyOperation,
    PharmacySubmissionStatus,
)
from app.pharmacy import service
from app.pharmacy.schemas import ConnectionTest
from app.pharmacy.service import Sent, Work
from connectors import registry
from connectors.base import (
    Connector,
    ConnectorError,
    Exchange,
    NotCancellable,
    PermanentError,
    PharmacyConfig,
    Recorder,
    TransientError,
)

Status = PharmacySubmissionStatus
ConnectorFactory = Callable[[PharmacyConfig, Recorder], Connector]
SYSTEM = Actor.system("pharmacy")


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    lost_claims: int = 0
    exchanges: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class PollReport:
    polled: int = 0
    changed: int = 0
    cancels_sent: int = 0
    errors: list[str] = field(default_factory=list)


def _outcome(error: BaseException | None) -> PharmacyExchangeOutcome:
    if error is None:
        return PharmacyExchangeOutcome.OK
    if isinstance(error, NotCancellable):
        return PharmacyExchangeOutcome.NOT_CANCELLABLE
    if isinstance(error, PermanentError):
        return PharmacyExchangeOutcome.PERMANENT_ERROR
    return PharmacyExchangeOutcome.TRANSIENT_ERROR


def _message(error: BaseException) -> str:
    if isinstance(error, ConnectorError):
        return error.message
    # Not a connector's own error (a bug, a malformed answer): its type only, the text may
    # carry what was sent.
    return f"unexpected {type(error).__name__} in the connector"


def _record_exchanges(
    session: Session,
    work: Work,
    operation: PharmacyOperation,
    exchanges: list[Exchange],
    error: BaseException | None,
) -> int:
    if work.pharmacy_id is None:
        return 0
    return service.record_exchanges(
        session,
        pharmacy_id=work.pharmacy_id,
        submission_id=work.submission_id,
        attempt=work.attempt,
        operation=operation,
        exchanges=exchanges,
        outcome=_outcome(error),
        config=work.config,
    )


def _send(work: Work, factory: ConnectorFactory, exchanges: list[Exchange]) -> Sent:
    """One send, no transaction open. Errors a retry may cure are transient; anything the
    connector raises that is not a ConnectorError is treated as transient too (retried, then
    dead-lettered), so a bug never loses a submission."""
    if work.problem is not None or work.config is None or work.submission is None:
        return Sent(error=work.problem or service.NO_PHARMACY, permanent=True)
    try:
        result = factory(work.config, exchanges.append).submit(work.submission)
    except PermanentError as exc:
        return Sent(error=exc.message, permanent=True)
    except Exception as exc:  # TransientError, and anything unexpected: retried
        return Sent(error=_message(exc))
    return Sent(status=result.status, external_id=result.external_id, message=result.message)


def deliver_due(
    sessions: sessionmaker[Session],
    *,
    limit: int = 50,
    now: datetime | None = None,
    connectors: ConnectorFactory = registry.get_connector,
    concurrency: int | None = None,
) -> DeliveryReport:
    """Claim due submissions (one short transaction), send them with no lock held (up to
    PHARMACY_DELIVERY_CONCURRENCY at once, so one slow pharmacy does not hold up the queue),
    record each outcome in a transaction of its own as it arrives; then sync the dead-letter
    alerts. Only this thread touches the database."""
    report = DeliveryReport()
    with sessions.begin() as session:
        claimed = service.claim_due(session, now=now or utcnow(), limit=limit)
    report.claimed = len(claimed)
    workers = max(1, min(concurrency or get_settings().pharmacy_delivery_concurrency, len(claimed)))

    def send(work: Work) -> tuple[Work, Sent, list[Exchange]]:
        exchanges: list[Exchange] = []
        return work, _send(work, connectors, exchanges), exchanges

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pharmacy-send") as pool:
        for future in as_completed([pool.submit(send, work) for work in claimed]):
            work, sent, exchanges = future.result()
            _record_send(sessions, work, sent, exchanges, report)
    sync_dead_letter_alerts(sessions)
    return report


def _record_send(
    sessions: sessionmaker[Session],
    work: Work,
    sent: Sent,
    exchanges: list[Exchange],
    report: DeliveryReport,
) -> None:
    error: BaseException | None = None
    if sent.error is not None:
        error = PermanentError(sent.error) if sent.permanent else TransientError(sent.error)
    with sessions.begin() as session:
        report.exchanges += _record_exchanges(
            session, work, PharmacyOperation.SUBMIT, exchanges, error
        )
        status = service.record_delivery(session, SYSTEM, work, sent)
    if status == Status.DEAD_LETTER:
        report.dead_lettered += 1
        report.errors.append(sent.error or "")
    elif status == Status.PENDING:
        report.retried += 1
        report.errors.append(sent.error or "")
    elif sent.status is None or status == Status.SENDING:
        report.lost_claims += 1  # another worker holds it now, or it was cancelled meanwhile
    else:
        report.delivered += 1


def sync_dead_letter_alerts(sessions: sessionmaker[Session]) -> None:
    """Open a pharmacy alert for each dead letter (and clear those re-sent or cancelled)."""
    with sessions.begin() as session:
        conditions = service.dead_letter_conditions(session)
        sync_alerts(
            session, AlertTopic.PHARMACY, conditions, key_prefix=service.DEAD_LETTER_KEY_PREFIX
        )


def poll_statuses(
    sessions: sessionmaker[Session],
    *,
    limit: int = 100,
    now: datetime | None = None,
    connectors: ConnectorFactory = registry.get_connector,
) -> PollReport:
    """Ask the pharmacies what became of what they hold (and send the queued cancels);
    each answer recorded in its own transaction, the order's timeline included."""
    report = PollReport()
    with sessions.begin() as session:
        works = service.claim_pollable(session, now=now or utcnow(), limit=limit)
    for work in works:
        assert work.config is not None and work.submission is not None
        assert work.external_id is not None
        exchanges: list[Exchange] = []
        connector = connectors(work.config, exchanges.append)
        wants_cancel = work.cancel_requested
        operation = PharmacyOperation.CANCEL if wants_cancel else PharmacyOperation.STATUS
        error: BaseException | None = None
        result = None
        try:
            if wants_cancel:
                connector.cancel(work.submission, work.external_id)
            else:
                result = connector.fetch_status(work.submission, work.external_id)
        except Exception as exc:
            error = exc
        with sessions.begin() as session:
            _record_exchanges(session, work, operation, exchanges, error)
            report.polled += 1
            if wants_cancel:
                if error is None:
                    service.record_cancelled_at_pharmacy(session, SYSTEM, work)
                    report.cancels_sent += 1
                elif isinstance(error, NotCancellable | PermanentError):
                    service.record_cancel_refused(
                        session, SYSTEM, work, isinstance(error, NotCancellable), _message(error)
                    )
                else:
                    report.errors.append(_message(error))
            elif result is not None:
                moved = service.record_poll(
                    session, SYSTEM, work, result.status, result.dispenses, result.message
                )
                report.changed += moved is not None
            elif error is not None:
                report.errors.append(_message(error))
    return report


@dataclass
class DrainReport:
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    polls: PollReport = field(default_factory=PollReport)
    rounds: int = 0


def drain(
    sessions: sessionmaker[Session],
    *,
    once: bool = False,
    max_rounds: int = 1000,
    connectors: ConnectorFactory = registry.get_connector,
) -> DrainReport:
    """Deliver everything due and poll statuses, round after round, until a round finds
    nothing due (retries scheduled later are left for later); `once`: a single round."""
    total = DrainReport()
    for _ in range(max_rounds):
        total.rounds += 1
        delivered = deliver_due(sessions, connectors=connectors)
        polled = poll_statuses(sessions, connectors=connectors)
        for name in (
            "claimed",
            "delivered",
            "retried",
            "dead_lettered",
            "lost_claims",
            "exchanges",
        ):
            setattr(total.delivery, name, getattr(total.delivery, name) + getattr(delivered, name))
        total.delivery.errors += delivered.errors
        for name in ("polled", "changed", "cancels_sent"):
            setattr(total.polls, name, getattr(total.polls, name) + getattr(polled, name))
        total.polls.errors += polled.errors
        if once:
            break
        with sessions.begin() as session:
            due = service.due_count(session, now=utcnow())
        if not due and not delivered.claimed and not polled.changed and not polled.cancels_sent:
            break
    return total


def test_connection(
    session: Session,
    actor: Actor,
    pharmacy_id: uuid.UUID,
    *,
    connectors: ConnectorFactory = registry.get_connector,
) -> ConnectionTest:
    """The pharmacy's healthcheck, logged and audited. Runs in the request's transaction, which
    holds no row lock while the pharmacy answers (the pharmacy is read, not locked)."""
    pharmacy = service.get_pharmacy(session, pharmacy_id)
    config = service.config_of(pharmacy)
    exchanges: list[Exchange] = []
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        connectors(config, exchanges.append).healthcheck()
    except Exception as exc:
        error = exc
    duration = (time.perf_counter() - started) * 1000
    service.record_exchanges(
        session,
        pharmacy_id=pharmacy.id,
        submission_id=None,
        attempt=0,
        operation=PharmacyOperation.HEALTHCHECK,
        exchanges=exchanges,
        outcome=_outcome(error),
        config=config,
    )
    message = _message(error) if error else None
    audit.record(
        session,
        actor,
        "pharmacy.connection_tested",
        "pharmacy",
        pharmacy.id,
        after={"ok": error is None, "message": message},
    )
    return ConnectionTest(
        pharmacy_id=pharmacy.id, ok=error is None, message=message, duration_ms=duration
    )


def tell_pharmacies_order_cancelled(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    *,
    connectors: ConnectorFactory = registry.get_connector,
) -> frozenset[uuid.UUID]:
    """Before a paid order is cancelled (and refunded), the pharmacies holding its
    prescriptions cancel them. Nothing is locked meanwhile. Returns the submissions the
    pharmacies cancelled; raises, changing nothing but the log of the exchanges (committed),
    when one has dispensed (409), cannot be reached (503) or refuses (409)."""
    told: set[uuid.UUID] = set()
    for row in service.cancellable_at_pharmacy(session, order_id):
        pharmacy = service.get_pharmacy(session, row.pharmacy_id) if row.pharmacy_id else None
        assert pharmacy is not None and row.external_id is not None
        config = service.config_of(pharmacy)
        submission = service.build_submission(session, row, pharmacy)
        exchanges: list[Exchange] = []
        error: BaseException | None = None
        try:
            connectors(config, exchanges.append).cancel(submission, row.external_id)
        except Exception as exc:
            error = exc
        service.record_exchanges(
            session,
            pharmacy_id=pharmacy.id,
            submission_id=row.id,
            attempt=row.attempts,
            operation=PharmacyOperation.CANCEL,
            exchanges=exchanges,
            outcome=_outcome(error),
            config=config,
        )
        if error is not None:
            # The request is about to be refused and its transaction undone; the record of the
            # exchange (and of any pharmacy that did cancel before this one) is kept. Nothing
            # else has been written yet: the order is locked and cancelled only afterwards.
            session.commit()
        if isinstance(error, NotCancellable):
            raise service.AlreadyDispensed(
                f"{pharmacy.name} has already dispensed this prescription; the order cannot be"
                " cancelled",
                submission_id=str(row.id),
            )
        if isinstance(error, PermanentError):
            raise service.PharmacyRefused(
                f"{pharmacy.name} refused to cancel: {error.message}", submission_id=str(row.id)
            )
        if error is not None:
            raise service.PharmacyUnavailable(
                f"{pharmacy.name} could not be reached to cancel the prescription; nothing was"
                " changed, try again later",
                submission_id=str(row.id),
            )
        told.add(row.id)
    return frozenset(told)
