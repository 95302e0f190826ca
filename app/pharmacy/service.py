"""Pharmacies and prescription submissions: the rules, no HTTP, no commit, no network.

A paid order's prescription items become one submission per pharmacy (the product's own, else
the default one) in the payment's transaction. Delivery (app/pharmacy/flows.py) claims due
submissions here, calls the connector with no transaction open, and records what happened
here: every exchange in `pharmacy_logs` (bodies encrypted), the submission's new status, and
the order's timeline (audit rows on the order).
"""

from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import locks, phi
from app.actor import Actor
from app.alerts.service import Condition
from app.audit import service as audit
from app.config import get_settings
from app.errors import (
    Conflict,
    DuplicateValue,
    InvalidStateTransition,
    NotFound,
    PortalError,
)
from app.models import (
    Alert,
    Order,
    OrderItem,
    Patient,
    Pharmacy,
    PharmacyLog,
    PharmacySubmission,
    Product,
    User,
)
from app.models.base import utcnow
from app.models.order_item import dosage_text_context
from app.models.status import (
    AlertTopic,
    PharmacyAuthKind,
    PharmacyExchangeOutcome,
    PharmacyOperation,
    PharmacySubmissionStatus,
)
from app.pagination import Keyset, KeysetPage
from app.patients.service import phi_context
from app.pharmacy.schemas import (
    AttemptOut,
    LogOut,
    OrderPharmacyOut,
    PharmacyCreate,
    PharmacyOut,
    PharmacyUpdate,
    SubmissionDetail,
    SubmissionOut,
)
from connectors import registry
from connectors.base import (
    Exchange,
    PharmacyAuth,
    PharmacyConfig,
    PharmacyPatient,
    PharmacyStatus,
    Prescriber,
    PrescriptionItem,
    Submission,
)

Status = PharmacySubmissionStatus

# A prescription item ordered without directions is sent with these.
DEFAULT_DOSAGE_TEXT = "Use as directed."
# Alert keys of the submissions that need an admin (dead letters).
DEAD_LETTER_KEY_PREFIX = "pharmacy-dead-letter:"
NO_PHARMACY = (
    "no pharmacy is configured for these items: set a default pharmacy (or the products'"
    " pharmacy), then re-send"
)
# The pharmacy's statuses as the submission's.
FROM_PHARMACY = {
    PharmacyStatus.SUBMITTED: Status.SUBMITTED,
    PharmacyStatus.ACCEPTED: Status.ACCEPTED,
    PharmacyStatus.REJECTED: Status.REJECTED,
    PharmacyStatus.DISPENSED: Status.DISPENSED,
    PharmacyStatus.CANCELLED: Status.CANCELLED,
}
# Statuses the pharmacy holds the prescription in (it can be polled or cancelled there).
AT_PHARMACY = (Status.SUBMITTED, Status.ACCEPTED)
# Where a submission may go from each status by the pharmacy's word (never backwards).
RANK = {
    Status.SUBMITTED: 1,
    Status.ACCEPTED: 2,
    Status.REJECTED: 3,
    Status.DISPENSED: 3,
    Status.CANCELLED: 3,
}
# Header names whose values are credentials, removed again before a log row is written.
SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password", re.I)


# -- problems -----------------------------------------------------------------------------------
class UnknownConnector(Conflict):
    """A connector name the schema allows but no connector of this installation has."""

    slug = "unknown-connector"
    title = "No connector has that name"


class IncompleteAuth(Conflict):
    """The kind of authentication chosen needs settings the pharmacy does not have (yet)."""

    slug = "incomplete-pharmacy-auth"
    title = "The pharmacy's authentication is incomplete"


class PharmacyInUse(Conflict):
    slug = "pharmacy-in-use"
    title = "The pharmacy has submissions"


class PharmacyUnavailable(PortalError):
    status = 503
    slug = "pharmacy-unavailable"
    title = "The pharmacy could not be reached"


class PharmacyRefused(Conflict):
    slug = "pharmacy-refused"
    title = "The pharmacy refused"


class AlreadyDispensed(Conflict):
    slug = "already-dispensed"
    title = "The pharmacy has already dispensed the prescription"


class SubmissionInFlight(Conflict):
    slug = "pharmacy-submission-in-flight"
    title = "A submission to the pharmacy is being sent"


# -- contexts of encrypted values ---------------------------------------------------------------
def secret_context(pharmacy_id: uuid.UUID, field: str) -> str:
    return f"pharmacies.{field}.{pharmacy_id}"


def log_body_context(log_id: uuid.UUID, side: str) -> str:
    return f"pharmacy_logs.{side}_body.{log_id}"


def patient_reference(patient_id: uuid.UUID, pharmacy_id: uuid.UUID) -> str:
    """The patient as one pharmacy knows them: a keyed hash, different for each pharmacy, so
    pharmacies cannot link their records to each other's or to the portal's ids."""
    return phi.lookup_hash(f"pharmacy-patient:{pharmacy_id}:{patient_id}")


# -- pharmacies ---------------------------------------------------------------------------------
AUDITED = (
    "name",
    "connector",
    "base_url",
    "auth_kind",
    "auth_header",
    "token_url",
    "client_id",
    "scope",
    "cert_file",
    "key_file",
    "ca_file",
    "mapping",
    "timeout_seconds",
    "active",
    "is_default",
)


def _fields(pharmacy: Pharmacy) -> dict[str, Any]:
    fields = {name: getattr(pharmacy, name) for name in AUDITED}
    fields["api_key_set"] = pharmacy.api_key_encrypted is not None
    fields["client_secret_set"] = pharmacy.client_secret_encrypted is not None
    return fields


def pharmacy_out(pharmacy: Pharmacy) -> PharmacyOut:
    return PharmacyOut.model_validate(
        {
            **_fields(pharmacy),
            "id": pharmacy.id,
            "created_at": pharmacy.created_at,
            "updated_at": pharmacy.updated_at,
        }
    )


def get_pharmacy(session: Session, pharmacy_id: uuid.UUID) -> Pharmacy:
    pharmacy = session.get(Pharmacy, pharmacy_id)
    if pharmacy is None:
        raise NotFound("pharmacy", pharmacy_id)
    return pharmacy


def _check_connector(name: str) -> None:
    known = registry.names()
    if name not in known:
        raise UnknownConnector(
            f"no connector is named {name!r}; known: {', '.join(known)}", field="connector"
        )


def _check_auth(pharmacy: Pharmacy) -> None:
    """The settings the pharmacy's kind of authentication needs are all there."""
    needed: dict[str, tuple[str, ...]] = {
        PharmacyAuthKind.NONE: (),
        PharmacyAuthKind.API_KEY: ("api_key_encrypted",),
        PharmacyAuthKind.OAUTH2: ("token_url", "client_id", "client_secret_encrypted"),
        PharmacyAuthKind.MTLS: ("cert_file", "key_file"),
    }
    missing = [
        column.removesuffix("_encrypted")
        for column in needed[PharmacyAuthKind(pharmacy.auth_kind)]
        if getattr(pharmacy, column) is None
    ]
    if missing:
        raise IncompleteAuth(
            f"auth_kind {pharmacy.auth_kind} needs {', '.join(missing)}", field=missing[0]
        )


def _apply(pharmacy: Pharmacy, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if name in ("api_key", "client_secret"):
            column = f"{name}_encrypted"
            sealed = phi.encrypt(value, secret_context(pharmacy.id, name)) if value else None
            setattr(pharmacy, column, sealed)
        else:
            setattr(pharmacy, name, value)
    # A secret of another kind of authentication is not kept: it would never be used.
    if pharmacy.auth_kind != PharmacyAuthKind.API_KEY:
        pharmacy.api_key_encrypted = None
    if pharmacy.auth_kind != PharmacyAuthKind.OAUTH2:
        pharmacy.client_secret_encrypted = None
    if pharmacy.is_default and not pharmacy.active:
        raise Conflict("the default pharmacy must be active", field="active")
    _check_auth(pharmacy)


def _unset_other_default(session: Session, pharmacy_id: uuid.UUID) -> None:
    for other in locks.pharmacies_where(
        session, Pharmacy.is_default & (Pharmacy.id != pharmacy_id)
    ):
        other.is_default = False
        other.updated_at = utcnow()


def _flush(session: Session, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent create or rename won the name (or the default)
        raise DuplicateValue(
            f"a pharmacy named {name!r} already exists, or another became the default meanwhile",
            field="name",
        ) from exc


def create_pharmacy(session: Session, actor: Actor, data: PharmacyCreate) -> Pharmacy:
    _check_connector(data.connector)
    if session.scalar(select(Pharmacy.id).where(Pharmacy.name == data.name)) is not None:
        raise DuplicateValue(f"a pharmacy named {data.name!r} already exists", field="name")
    if data.is_default:
        _unset_other_default(session, uuid.UUID(int=0))
    pharmacy = Pharmacy(id=uuid.uuid4())
    _apply(pharmacy, data.model_dump())
    session.add(pharmacy)
    _flush(session, data.name)
    session.refresh(pharmacy)
    audit.record(
        session, actor, "pharmacy.created", "pharmacy", pharmacy.id, after=_fields(pharmacy)
    )
    return pharmacy


def update_pharmacy(
    session: Session, actor: Actor, pharmacy_id: uuid.UUID, data: PharmacyUpdate
) -> Pharmacy:
    changes = data.model_dump(exclude_unset=True)
    if "connector" in changes:
        _check_connector(changes["connector"])
    if changes.get("is_default"):
        rows = locks.pharmacies_where(session, or_(Pharmacy.is_default, Pharmacy.id == pharmacy_id))
        pharmacy = next((p for p in rows if p.id == pharmacy_id), None)
    else:
        pharmacy = locks.pharmacy(session, pharmacy_id)
    if pharmacy is None:
        raise NotFound("pharmacy", pharmacy_id)
    if "name" in changes and session.scalar(
        select(Pharmacy.id).where(Pharmacy.name == changes["name"], Pharmacy.id != pharmacy_id)
    ):
        raise DuplicateValue(f"a pharmacy named {changes['name']!r} already exists", field="name")
    before = _fields(pharmacy)
    if changes.get("is_default"):
        _unset_other_default(session, pharmacy.id)
    _apply(pharmacy, changes)
    pharmacy.updated_at = utcnow()
    _flush(session, pharmacy.name)
    after = _fields(pharmacy)
    for secret in ("api_key", "client_secret"):
        if changes.get(secret):
            after[f"{secret}_changed"] = True
    audit.record(
        session, actor, "pharmacy.updated", "pharmacy", pharmacy.id, before=before, after=after
    )
    return pharmacy


def delete_pharmacy(session: Session, actor: Actor, pharmacy_id: uuid.UUID) -> None:
    """Delete a pharmacy that never received anything; one with submissions is kept (their
    history names it): deactivate it instead."""
    pharmacy = locks.pharmacy(session, pharmacy_id)
    if pharmacy is None:
        raise NotFound("pharmacy", pharmacy_id)
    used = session.scalar(
        select(func.count())
        .select_from(PharmacySubmission)
        .where(PharmacySubmission.pharmacy_id == pharmacy_id)
    )
    if used:
        raise PharmacyInUse(
            f"{used} submission(s) went to this pharmacy; deactivate it (active: false) instead"
        )
    before = _fields(pharmacy)
    session.delete(pharmacy)
    session.flush()
    audit.record(session, actor, "pharmacy.deleted", "pharmacy", pharmacy_id, before=before)


BY_NAME = Keyset(Pharmacy.name)


def list_pharmacies(
    session: Session, *, active: bool | None, limit: int, cursor: str | None
) -> KeysetPage[Pharmacy]:
    query = select(Pharmacy)
    if active is not None:
        query = query.where(Pharmacy.active.is_(active))
    return BY_NAME.scalars(session, query, limit=limit, cursor=cursor)


def config_of(pharmacy: Pharmacy) -> PharmacyConfig:
    """The connector's configuration, secrets decrypted (in memory only, for the call)."""

    def secret(name: str) -> str | None:
        value: str | None = getattr(pharmacy, f"{name}_encrypted")
        return phi.decrypt(value, secret_context(pharmacy.id, name)) if value else None

    return PharmacyConfig(
        name=pharmacy.name,
        connector=pharmacy.connector,
        base_url=pharmacy.base_url,
        auth=PharmacyAuth(
            kind=PharmacyAuthKind(pharmacy.auth_kind).value,
            header=pharmacy.auth_header,
            api_key=secret("api_key"),
            token_url=pharmacy.token_url,
            client_id=pharmacy.client_id,
            client_secret=secret("client_secret"),
            scope=pharmacy.scope,
            cert_file=pharmacy.cert_file,
            key_file=pharmacy.key_file,
            ca_file=pharmacy.ca_file,
        ),
        mapping=dict(pharmacy.mapping),
        timeout_seconds=pharmacy.timeout_seconds,
    )


def ensure_pharmacy_exists(session: Session, pharmacy_id: uuid.UUID | None) -> None:
    """For a product's override: the pharmacy named must exist (404 otherwise)."""
    if pharmacy_id is not None and session.get(Pharmacy, pharmacy_id) is None:
        raise NotFound("pharmacy", pharmacy_id)


# -- the paid-order hook ------------------------------------------------------------------------
def _timeline(
    session: Session,
    actor: Actor,
    submission: PharmacySubmission,
    event: str,
    pharmacy_name: str | None,
    **facts: Any,
) -> None:
    """An event of the order's pharmacy life, in the order's history (the audit log)."""
    audit.record(
        session,
        actor,
        f"order.pharmacy_{event}",
        "order",
        submission.order_id,
        after={
            "submission_id": submission.id,
            "pharmacy": pharmacy_name,
            "status": submission.status,
            **facts,
        },
    )


def pharmacy_name(session: Session, pharmacy_id: uuid.UUID | None) -> str | None:
    return (
        session.scalar(select(Pharmacy.name).where(Pharmacy.id == pharmacy_id))
        if pharmacy_id
        else None
    )


def _default_pharmacy(session: Session) -> Pharmacy | None:
    return session.scalar(select(Pharmacy).where(Pharmacy.is_default))


def queue_paid_order(session: Session, actor: Actor, order: Order) -> list[PharmacySubmission]:
    """One submission per pharmacy for the paid order's prescription items (the product's own
    pharmacy, else the default one), in the caller's transaction. Items no pharmacy can take are
    held: a dead-lettered submission saying why (and an alert at the next delivery run) until an
    admin configures a pharmacy and re-sends it. Calling it again for the same order adds
    nothing."""
    if session.scalar(select(PharmacySubmission.id).where(PharmacySubmission.order_id == order.id)):
        return []
    rows = session.execute(
        select(OrderItem.id, Product.pharmacy_id)
        .join(Product, Product.id == OrderItem.product_id)
        .where(OrderItem.order_id == order.id, Product.requires_prescription)
        .order_by(OrderItem.id)
    ).all()
    if not rows:
        return []
    default = _default_pharmacy(session)
    groups: dict[uuid.UUID | None, list[str]] = defaultdict(list)
    for item_id, own in rows:
        groups[own or (default.id if default else None)].append(str(item_id))
    now = utcnow()
    created = []
    for pharmacy_id, item_ids in sorted(groups.items(), key=lambda g: str(g[0])):
        submission = PharmacySubmission(
            id=uuid.uuid4(),
            order_id=order.id,
            pharmacy_id=pharmacy_id,
            order_item_ids=item_ids,
            status=Status.PENDING if pharmacy_id else Status.DEAD_LETTER,
            attempts=0,
            next_attempt_at=now,
            last_error=None if pharmacy_id else NO_PHARMACY,
        )
        session.add(submission)
        created.append(submission)
    session.flush()
    for submission in created:
        name = pharmacy_name(session, submission.pharmacy_id)
        event = "queued" if submission.pharmacy_id else "held"
        _timeline(session, actor, submission, event, name, items=len(submission.order_item_ids))
    return created


# -- building what a connector is given ---------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    parts = name.split()
    if len(parts) < 2:
        return name.strip(), name.strip()
    return " ".join(parts[:-1]), parts[-1]


def build_submission(
    session: Session, submission: PharmacySubmission, pharmacy: Pharmacy
) -> Submission:
    """What the pharmacy needs to dispense, and nothing more. Patient fields are decrypted here
    only, in memory, for the connector's call."""
    from datetime import date

    order = session.get(Order, submission.order_id)
    assert order is not None
    patient = session.get(Patient, order.patient_id)
    assert patient is not None

    def field(name: str) -> str:
        return phi.decrypt(getattr(patient, f"{name}_encrypted"), phi_context(patient.id, name))

    given, family = _split_name(field("name"))
    phone = field("phone") or None
    doctor = session.get(User, order.doctor_id) if order.doctor_id else None
    item_ids = [uuid.UUID(i) for i in submission.order_item_ids]
    lines = session.execute(
        select(OrderItem, Product)
        .join(Product, Product.id == OrderItem.product_id)
        .where(OrderItem.id.in_(item_ids))
        .order_by(OrderItem.id)
    ).all()
    validity = get_settings().pharmacy_prescription_validity_days
    items = tuple(
        PrescriptionItem(
            identifier=str(item.id),
            sku=product.sku,
            display=product.name,
            rxnorm=product.rxnorm_code,
            ndc=product.ndc_code,
            quantity=item.quantity,
            dosage_text=(
                phi.decrypt(item.dosage_text_encrypted, dosage_text_context(item.id))
                if item.dosage_text_encrypted
                else DEFAULT_DOSAGE_TEXT
            ),
            validity_days=validity,
        )
        for item, product in lines
    )
    return Submission(
        id=str(submission.id),
        order_reference=str(order.id),
        patient=PharmacyPatient(
            reference=patient_reference(patient.id, pharmacy.id),
            given_name=given,
            family_name=family,
            birth_date=date.fromisoformat(field("date_of_birth")),
            phone=phone,
        ),
        prescriber=Prescriber(
            reference=str(doctor.id) if doctor else "portal",
            display=doctor.full_name if doctor else None,
        ),
        authored_on=order.paid_at or order.created_at,
        items=items,
    )


# -- claims -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """A claimed submission, everything its connector call needs, and the claim to record it
    under. `problem` says why it cannot be sent at all (dead-lettered when recorded)."""

    submission_id: uuid.UUID
    order_id: uuid.UUID
    pharmacy_id: uuid.UUID | None
    pharmacy_name: str | None
    claim_token: uuid.UUID
    attempt: int
    config: PharmacyConfig | None
    submission: Submission | None
    external_id: str | None
    problem: str | None = None
    cancel_requested: bool = False


def _work(
    session: Session, row: PharmacySubmission, token: uuid.UUID, *, with_problem: bool = True
) -> Work:
    pharmacy = session.get(Pharmacy, row.pharmacy_id) if row.pharmacy_id else None
    problem = None
    if pharmacy is None:
        problem = NO_PHARMACY
    elif not pharmacy.active:
        problem = f"pharmacy {pharmacy.name!r} is inactive: activate it or re-route, then re-send"
    ready = pharmacy is not None and (problem is None or not with_problem)
    return Work(
        submission_id=row.id,
        order_id=row.order_id,
        pharmacy_id=row.pharmacy_id,
        pharmacy_name=pharmacy.name if pharmacy else None,
        claim_token=token,
        attempt=row.attempts,
        config=config_of(pharmacy) if ready and pharmacy else None,
        submission=build_submission(session, row, pharmacy) if ready and pharmacy else None,
        external_id=row.external_id,
        problem=problem if with_problem else None,
        cancel_requested=row.cancel_requested_at is not None,
    )


def claim_due(
    session: Session, *, now: datetime, limit: int, lease: timedelta | None = None
) -> list[Work]:
    """Claim due submissions under a lease (short transaction, SKIP LOCKED): each becomes
    `sending`, counts one more attempt (a worker killed mid-send used one) and gets a new
    claim token; a lapsed claim's worker can no longer record over the new one."""
    lease = lease or timedelta(seconds=get_settings().pharmacy_claim_lease_seconds)
    rows = locks.claim_due_pharmacy_submissions(session, now=now, limit=limit)
    claimed = []
    for row in rows:
        token = uuid.uuid4()
        row.status = Status.SENDING
        row.claimed_until = now + lease
        row.claim_token = token
        row.attempts += 1
        row.updated_at = now
        claimed.append(_claimed_work(session, row, token))
    session.flush()
    return claimed


def _claimed_work(session: Session, row: PharmacySubmission, token: uuid.UUID) -> Work:
    """The claimed row's work; one that cannot even be built (a record gone missing, a key
    not configured) becomes a dead letter saying so, instead of failing every claim with it."""
    try:
        with session.begin_nested():
            return _work(session, row, token)
    except Exception as exc:  # the reason's type only: its text may carry what was read
        return Work(
            submission_id=row.id,
            order_id=row.order_id,
            pharmacy_id=row.pharmacy_id,
            pharmacy_name=None,
            claim_token=token,
            attempt=row.attempts,
            config=None,
            submission=None,
            external_id=row.external_id,
            problem=f"the submission could not be built ({type(exc).__name__}); fix, then re-send",
        )


def claim_pollable(session: Session, *, now: datetime, limit: int) -> list[Work]:
    """Submitted and accepted submissions not polled within PHARMACY_POLL_INTERVAL_SECONDS
    (and those whose cancel is still to be told), marked polled now (SKIP LOCKED, so two
    pollers never poll one submission at once)."""
    interval = timedelta(seconds=get_settings().pharmacy_poll_interval_seconds)
    rows = list(
        session.scalars(
            select(PharmacySubmission)
            .where(
                PharmacySubmission.status.in_(AT_PHARMACY),
                PharmacySubmission.external_id.is_not(None),
                or_(
                    PharmacySubmission.last_polled_at.is_(None),
                    PharmacySubmission.last_polled_at <= now - interval,
                    PharmacySubmission.cancel_requested_at.is_not(None),
                ),
            )
            .order_by(PharmacySubmission.last_polled_at.nulls_first(), PharmacySubmission.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.last_polled_at = now
    session.flush()
    return [_work(session, row, uuid.uuid4(), with_problem=False) for row in rows]


def due_count(session: Session, *, now: datetime) -> int:
    """Submissions a delivery run would claim now (for the sensor and `drain`)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(PharmacySubmission)
            .where(
                or_(
                    (PharmacySubmission.status == Status.PENDING)
                    & (PharmacySubmission.next_attempt_at <= now),
                    (PharmacySubmission.status == Status.SENDING)
                    & (PharmacySubmission.claimed_until < now),
                )
            )
        )
        or 0
    )


# -- recording ------------------------------------------------------------------------------------
def _secrets_of(config: PharmacyConfig | None) -> list[str]:
    if config is None:
        return []
    return [s for s in (config.auth.api_key, config.auth.client_secret) if s]


def _scrub(text: str | None, secrets: list[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _headers(headers: Mapping[str, str], secrets: list[str]) -> dict[str, str]:
    """Headers as stored: credentials removed again, whatever the connector did."""
    return {
        name: "[redacted]" if SECRET_HEADER.search(name) else (_scrub(value, secrets) or "")
        for name, value in headers.items()
    }


def record_exchanges(
    session: Session,
    *,
    pharmacy_id: uuid.UUID,
    submission_id: uuid.UUID | None,
    attempt: int,
    operation: PharmacyOperation,
    exchanges: Iterable[Exchange],
    outcome: PharmacyExchangeOutcome,
    config: PharmacyConfig | None,
) -> int:
    """One `pharmacy_logs` row per exchange; the call's outcome is the last exchange's, those
    before it (e.g. a token request) were `ok` unless they carry an error."""
    secrets = _secrets_of(config)
    exchanges = list(exchanges)
    for index, exchange in enumerate(exchanges):
        log_id = uuid.uuid4()
        last = index == len(exchanges) - 1
        this_outcome = (
            outcome
            if last
            else (
                PharmacyExchangeOutcome.TRANSIENT_ERROR
                if exchange.error
                else PharmacyExchangeOutcome.OK
            )
        )

        def sealed(body: str | None, side: str, log_id: uuid.UUID = log_id) -> str | None:
            clean = _scrub(body, secrets)
            return phi.encrypt(clean, log_body_context(log_id, side)) if clean is not None else None

        session.add(
            PharmacyLog(
                id=log_id,
                pharmacy_id=pharmacy_id,
                submission_id=submission_id,
                attempt=attempt,
                operation=operation,
                method=exchange.method[:10],
                url=_scrub(exchange.url, secrets) or "",
                request_headers=_headers(exchange.request_headers, secrets),
                request_body_encrypted=sealed(exchange.request_body, "request"),
                status_code=exchange.status_code,
                response_headers=_headers(exchange.response_headers, secrets),
                response_body_encrypted=sealed(exchange.response_body, "response"),
                duration_ms=float(exchange.duration_ms),
                outcome=this_outcome,
                error=_scrub(exchange.error, secrets),
                at=utcnow(),
            )
        )
    session.flush()
    return len(exchanges)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Delay before the next send after `attempts` sends: exponential and capped, with full
    jitter (anywhere from zero to the ceiling), so failing submissions spread out."""
    settings = get_settings()
    ceiling = min(
        settings.pharmacy_backoff_max_seconds,
        settings.pharmacy_backoff_base_seconds * 2 ** max(attempts - 1, 0),
    )
    return timedelta(seconds=(rng or random).uniform(0, ceiling))


@dataclass(frozen=True)
class Sent:
    """What one send achieved: a pharmacy status, or an error (`permanent`: do not retry)."""

    status: PharmacyStatus | None = None
    external_id: str | None = None
    message: str | None = None
    error: str | None = None
    permanent: bool = False


def _stamp(row: PharmacySubmission, status: Status, now: datetime) -> None:
    row.status = status
    row.updated_at = now
    stamp = {
        Status.SUBMITTED: "submitted_at",
        Status.ACCEPTED: "accepted_at",
        Status.DISPENSED: "dispensed_at",
        Status.CANCELLED: "cancelled_at",
    }.get(status)
    if status in (Status.ACCEPTED, Status.DISPENSED) and row.submitted_at is None:
        row.submitted_at = now
    if stamp and getattr(row, stamp) is None:
        setattr(row, stamp, now)


def record_delivery(
    session: Session, actor: Actor, work: Work, sent: Sent, *, now: datetime | None = None
) -> Status:
    """The outcome of one send, under the submission's lock. A claim that lapsed and was taken
    by another worker records nothing here (its exchanges are logged all the same)."""
    now = now or utcnow()
    row = locks.pharmacy_submission(session, work.submission_id)
    assert row is not None
    if row.status != Status.SENDING or row.claim_token != work.claim_token:
        return Status(row.status)
    row.claimed_until, row.claim_token = None, None
    if sent.status is not None:
        status = FROM_PHARMACY[sent.status]
        row.external_id = sent.external_id or row.external_id
        row.last_error = sent.message if status == Status.REJECTED else None
        _stamp(row, status, now)
        _timeline(
            session, actor, row, status.value, work.pharmacy_name, external_id=row.external_id
        )
        return status
    error = (sent.error or "the pharmacy did not answer")[:2000]
    if row.cancel_requested_at is not None:
        # The order was cancelled while this was being sent, and the send failed: stop here.
        _stamp(row, Status.CANCELLED, now)
        row.cancel_requested_at, row.last_error = None, error
        _timeline(session, actor, row, "cancelled", work.pharmacy_name, sent=False)
        return Status.CANCELLED
    if sent.permanent:
        row.status, row.last_error, row.updated_at = Status.DEAD_LETTER, error, now
        _timeline(session, actor, row, "dead_lettered", work.pharmacy_name, attempts=row.attempts)
        return Status.DEAD_LETTER
    if row.attempts >= get_settings().pharmacy_max_attempts:
        row.status, row.updated_at = Status.DEAD_LETTER, now
        row.last_error = f"gave up after {row.attempts} attempts: {error}"[:2000]
        _timeline(session, actor, row, "dead_lettered", work.pharmacy_name, attempts=row.attempts)
        return Status.DEAD_LETTER
    row.status, row.last_error, row.updated_at = Status.PENDING, error, now
    row.next_attempt_at = now + backoff(row.attempts)
    return Status.PENDING


# Keys of a dispense summary that could name the patient or the people around them.
_PERSONAL = re.compile(r"patient|subject|performer|receiver|name|address|phone|birth|note", re.I)


def _plain(value: object) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if not _PERSONAL.search(str(k))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def summarise_dispenses(dispenses: Iterable[Mapping[str, object]]) -> dict[str, Any]:
    """What the portal keeps of the pharmacy's MedicationDispense resources: quantities, dates,
    statuses and medication codes; anything naming a person is left out."""
    summary = [_plain(dispense) for dispense in dispenses]
    return {"count": len(summary), "dispenses": summary}


def record_poll(
    session: Session,
    actor: Actor,
    work: Work,
    status: PharmacyStatus,
    dispenses: Iterable[Mapping[str, object]] = (),
    message: str | None = None,
    *,
    now: datetime | None = None,
) -> Status | None:
    """The pharmacy's current status of a submitted prescription; returns the new status when
    it moved (forward only), None otherwise."""
    now = now or utcnow()
    row = locks.pharmacy_submission(session, work.submission_id)
    assert row is not None
    if row.status not in AT_PHARMACY:
        return None  # cancelled or moved by another path meanwhile
    target = FROM_PHARMACY[status]
    if RANK[target] <= RANK[Status(row.status)]:
        return None
    _stamp(row, target, now)
    facts: dict[str, Any] = {"external_id": row.external_id}
    if target == Status.DISPENSED:
        row.dispense = summarise_dispenses(dispenses)
        facts["dispenses"] = row.dispense["count"]
    if target == Status.REJECTED:
        row.last_error = (message or "rejected by the pharmacy")[:2000]
    if target == Status.CANCELLED:
        row.cancel_requested_at = None
    _timeline(session, actor, row, target.value, work.pharmacy_name, **facts)
    return target


def record_cancelled_at_pharmacy(
    session: Session, actor: Actor, work: Work, *, now: datetime | None = None
) -> None:
    """A queued cancel (`cancel_requested_at`) the pharmacy has now acknowledged."""
    now = now or utcnow()
    row = locks.pharmacy_submission(session, work.submission_id)
    assert row is not None
    if row.status in AT_PHARMACY:
        _stamp(row, Status.CANCELLED, now)
        row.cancel_requested_at = None
        _timeline(session, actor, row, "cancelled", work.pharmacy_name, external_id=row.external_id)


def record_cancel_refused(
    session: Session, actor: Actor, work: Work, dispensed: bool, message: str
) -> None:
    """A queued cancel the pharmacy refused: dispensed already, or refused for good."""
    row = locks.pharmacy_submission(session, work.submission_id)
    assert row is not None
    row.cancel_requested_at = None
    row.last_error = f"cancel refused: {message}"[:2000]
    if dispensed and row.status in AT_PHARMACY:
        _stamp(row, Status.DISPENSED, utcnow())
    _timeline(session, actor, row, "cancel_refused", work.pharmacy_name, dispensed=dispensed)


# -- alerts -------------------------------------------------------------------------------------
def dead_letter_conditions(session: Session) -> list[Condition]:
    """One alert condition per dead-lettered submission; no PHI and no pharmacy message (it may
    repeat the patient's details): the admin reads it on the submission."""
    max_attempts = get_settings().pharmacy_max_attempts
    rows = session.execute(
        select(PharmacySubmission, Pharmacy.name)
        .outerjoin(Pharmacy, Pharmacy.id == PharmacySubmission.pharmacy_id)
        .where(PharmacySubmission.status == Status.DEAD_LETTER)
        .order_by(PharmacySubmission.created_at, PharmacySubmission.id)
    ).all()
    conditions = []
    for row, name in rows:
        if row.pharmacy_id is None:
            why = "no pharmacy is configured"
        elif row.attempts >= max_attempts:
            why = f"{row.attempts} attempts failed"
        else:
            why = "the pharmacy refused it"
        conditions.append(
            Condition(
                key=f"{DEAD_LETTER_KEY_PREFIX}{row.id}",
                summary=f"Prescription submission {row.id} to {name or 'no pharmacy'} is"
                f" dead-lettered: {why}",
                details={
                    "submission_id": str(row.id),
                    "order_id": str(row.order_id),
                    "pharmacy": name,
                    "attempts": row.attempts,
                },
            )
        )
    return conditions


def unalerted_dead_letters(session: Session) -> int:
    """Dead letters without an open alert yet (e.g. items held at payment for want of a
    pharmacy): the sensor runs a delivery for them, which opens their alerts."""
    key = func.concat(DEAD_LETTER_KEY_PREFIX, func.cast(PharmacySubmission.id, String))
    alerted = (
        select(Alert.id)
        .where(Alert.topic == AlertTopic.PHARMACY, Alert.cleared_at.is_(None), Alert.key == key)
        .exists()
    )
    return int(
        session.scalar(
            select(func.count())
            .select_from(PharmacySubmission)
            .where(PharmacySubmission.status == Status.DEAD_LETTER, ~alerted)
        )
        or 0
    )


# -- admin --------------------------------------------------------------------------------------
def get_submission(session: Session, submission_id: uuid.UUID) -> PharmacySubmission:
    row = session.get(PharmacySubmission, submission_id)
    if row is None:
        raise NotFound("pharmacy submission", submission_id)
    return row


def resend(session: Session, actor: Actor, submission_id: uuid.UUID) -> PharmacySubmission:
    """An admin puts a dead letter back in the queue, with fresh attempts. One held for want of
    a pharmacy is routed now (the products' pharmacy, else the default one)."""
    row = locks.pharmacy_submission(session, submission_id)
    if row is None:
        raise NotFound("pharmacy submission", submission_id)
    if row.status != Status.DEAD_LETTER:
        raise InvalidStateTransition(
            f"only dead-lettered submissions can be re-sent; this one is {row.status}",
            current_status=row.status,
        )
    if row.pharmacy_id is None:
        own = set(
            session.scalars(
                select(Product.pharmacy_id)
                .join(OrderItem, OrderItem.product_id == Product.id)
                .where(OrderItem.id.in_([uuid.UUID(i) for i in row.order_item_ids]))
            )
        )
        default = _default_pharmacy(session)
        chosen = {p or (default.id if default else None) for p in own}
        if None in chosen or len(chosen) != 1:
            raise Conflict(
                "no single pharmacy can take these items yet: set a default pharmacy or the"
                " products' pharmacy first"
            )
        row.pharmacy_id = chosen.pop()
    now = utcnow()
    row.status, row.attempts, row.next_attempt_at = Status.PENDING, 0, now
    row.claimed_until = row.claim_token = None
    row.updated_at = now
    audit.record(
        session,
        actor,
        "pharmacy_submission.resent",
        "pharmacy_submission",
        row.id,
        before={"status": Status.DEAD_LETTER, "last_error": row.last_error},
        after={"status": Status.PENDING, "pharmacy_id": row.pharmacy_id},
    )
    _timeline(session, actor, row, "resent", pharmacy_name(session, row.pharmacy_id))
    session.flush()
    return row


NEWEST_FIRST = Keyset(PharmacySubmission.created_at, PharmacySubmission.id, descending=True)


def list_submissions(
    session: Session,
    actor: Actor,
    *,
    status: Status | None,
    order_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> KeysetPage[SubmissionOut]:
    query = select(PharmacySubmission)
    if status:
        query = query.where(PharmacySubmission.status == status)
    if order_id:
        query = query.where(PharmacySubmission.order_id == order_id)
    page = NEWEST_FIRST.scalars(session, query, limit=limit, cursor=cursor)
    names = _names(session, {row.pharmacy_id for row in page.rows})
    audit.record(
        session,
        actor,
        "pharmacy_submission.listed",
        "pharmacy_submission",
        "list",
        after={"submission_ids": [row.id for row in page.rows], "status": status},
    )
    return page.map(lambda row: submission_out(row, names.get(row.pharmacy_id)))


def _names(session: Session, ids: set[uuid.UUID | None]) -> dict[uuid.UUID | None, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = session.execute(select(Pharmacy.id, Pharmacy.name).where(Pharmacy.id.in_(wanted)))
    return {pharmacy_id: name for pharmacy_id, name in rows}


def submission_out(row: PharmacySubmission, pharmacy_name: str | None) -> SubmissionOut:
    return SubmissionOut.model_validate(
        {
            **{c: getattr(row, c) for c in SubmissionOut.model_fields if hasattr(row, c)},
            "pharmacy_name": pharmacy_name,
        }
    )


def _logs(session: Session, submission_id: uuid.UUID) -> list[PharmacyLog]:
    return list(
        session.scalars(
            select(PharmacyLog)
            .where(PharmacyLog.submission_id == submission_id)
            .order_by(PharmacyLog.at, PharmacyLog.id)
        )
    )


def _attempt(log: PharmacyLog) -> dict[str, Any]:
    return {c: getattr(log, c) for c in AttemptOut.model_fields}


def submission_detail(session: Session, actor: Actor, submission_id: uuid.UUID) -> SubmissionDetail:
    row = get_submission(session, submission_id)
    logs = _logs(session, row.id)
    audit.record(session, actor, "pharmacy_submission.read", "pharmacy_submission", row.id)
    out = submission_out(row, pharmacy_name(session, row.pharmacy_id))
    return SubmissionDetail(
        **out.model_dump(),
        order_item_ids=[uuid.UUID(i) for i in row.order_item_ids],
        exchanges=[AttemptOut.model_validate(_attempt(log)) for log in logs],
    )


def read_logs(session: Session, actor: Actor, submission_id: uuid.UUID) -> list[LogOut]:
    """Every exchange of the submission with its bodies decrypted (they carry PHI): the read is
    audited, naming the rows read."""
    row = get_submission(session, submission_id)
    logs = _logs(session, row.id)

    def body(log: PharmacyLog, side: str) -> str | None:
        value: str | None = getattr(log, f"{side}_body_encrypted")
        return phi.decrypt(value, log_body_context(log.id, side)) if value else None

    audit.record(
        session,
        actor,
        "pharmacy_log.read",
        "pharmacy_submission",
        row.id,
        after={"log_ids": [log.id for log in logs], "order_id": row.order_id},
    )
    return [
        LogOut(
            **_attempt(log),
            request_headers=log.request_headers,
            request_body=body(log, "request"),
            response_headers=log.response_headers,
            response_body=body(log, "response"),
        )
        for log in logs
    ]


def order_pharmacy_view(session: Session, order_id: uuid.UUID) -> list[OrderPharmacyOut]:
    """The order's submissions as its view shows them."""
    rows = session.execute(
        select(PharmacySubmission, Pharmacy.name)
        .outerjoin(Pharmacy, Pharmacy.id == PharmacySubmission.pharmacy_id)
        .where(PharmacySubmission.order_id == order_id)
        .order_by(PharmacySubmission.created_at, PharmacySubmission.id)
    ).all()
    return [
        OrderPharmacyOut(
            submission_id=row.id,
            pharmacy_name=name,
            status=Status(row.status),
            last_error=row.last_error,
            submitted_at=row.submitted_at,
            accepted_at=row.accepted_at,
            dispensed_at=row.dispensed_at,
            cancelled_at=row.cancelled_at,
            dispense=row.dispense,
        )
        for row, name in rows
    ]


def submission_statuses(
    session: Session, order_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Status]]:
    """For a page of orders: the status of each one's submissions, oldest first (one query)."""
    statuses: dict[uuid.UUID, list[Status]] = {}
    if not order_ids:
        return statuses
    rows = session.execute(
        select(PharmacySubmission.order_id, PharmacySubmission.status)
        .where(PharmacySubmission.order_id.in_(order_ids))
        .order_by(PharmacySubmission.created_at, PharmacySubmission.id)
    )
    for order_id, status in rows:
        statuses.setdefault(order_id, []).append(Status(status))
    return statuses


# -- cancelling an order ------------------------------------------------------------------------
def cancellable_at_pharmacy(session: Session, order_id: uuid.UUID) -> list[PharmacySubmission]:
    """Before an order is cancelled (read without a lock): refused when a pharmacy dispensed
    or a send is under way; returns the submissions the pharmacies hold, to be told first."""
    rows = list(
        session.scalars(
            select(PharmacySubmission)
            .where(PharmacySubmission.order_id == order_id)
            .execution_options(populate_existing=True)  # what the poller recorded meanwhile
        )
    )
    _refuse_cancel(rows)
    return [row for row in rows if row.status in AT_PHARMACY and row.external_id]


def _refuse_cancel(rows: Iterable[PharmacySubmission]) -> None:
    for row in rows:
        if row.status == Status.DISPENSED:
            raise AlreadyDispensed(
                "the pharmacy has dispensed this order's prescription; it cannot be cancelled",
                submission_id=str(row.id),
            )
        if row.status == Status.SENDING:
            raise SubmissionInFlight(
                "the prescription is being sent to the pharmacy right now; try again in a minute",
                submission_id=str(row.id),
            )


def withdraw(
    session: Session,
    actor: Actor,
    order_id: uuid.UUID,
    told: frozenset[uuid.UUID] | None,
) -> None:
    """The order is being cancelled (its row locked by the caller): its submissions are locked
    and closed. Those never delivered are cancelled here; those the pharmacy holds were told
    first (`told`, the API's cancel), else the cancellation is refused. When `told` is None (a
    refund made at Stripe: the money is gone, this must not fail) what a pharmacy holds or is
    being sent gets a queued cancel that the status poll sends."""
    rows = locks.pharmacy_submissions_of_order(session, order_id)
    if told is not None:
        _refuse_cancel(rows)
    now = utcnow()
    for row in rows:
        name = pharmacy_name(session, row.pharmacy_id)
        if row.status in (Status.PENDING, Status.DEAD_LETTER):
            _stamp(row, Status.CANCELLED, now)
            _timeline(session, actor, row, "cancelled", name, sent=False)
        elif row.status in AT_PHARMACY and told is not None and row.id in told:
            _stamp(row, Status.CANCELLED, now)
            _timeline(session, actor, row, "cancelled", name, external_id=row.external_id)
        elif row.status in (*AT_PHARMACY, Status.SENDING) and told is None:
            row.cancel_requested_at = now
            row.updated_at = now
            _timeline(session, actor, row, "cancel_queued", name, external_id=row.external_id)
        elif row.status in AT_PHARMACY:
            raise SubmissionInFlight(
                "the pharmacy received the prescription while the order was being cancelled;"
                " try again",
                submission_id=str(row.id),
            )


# -- key rotation -------------------------------------------------------------------------------
def rotate_pharmacy_keys(session: Session, *, batch: int = 500) -> int:
    """Re-encrypt pharmacies' secrets, exchange bodies and order items' dosage texts not sealed
    by the active key; returns the rows changed. Resumable; the caller commits."""
    targets: list[tuple[Any, Any, list[tuple[str, Callable[[Any], str]]]]] = [
        (
            select(Pharmacy),
            Pharmacy.id,
            [
                ("api_key_encrypted", lambda row: secret_context(row.id, "api_key")),
                ("client_secret_encrypted", lambda row: secret_context(row.id, "client_secret")),
            ],
        ),
        (
            select(PharmacyLog).where(
                PharmacyLog.request_body_encrypted.is_not(None)
                | PharmacyLog.response_body_encrypted.is_not(None)
            ),
            PharmacyLog.id,
            [
                ("request_body_encrypted", lambda row: log_body_context(row.id, "request")),
                ("response_body_encrypted", lambda row: log_body_context(row.id, "response")),
            ],
        ),
        (
            select(OrderItem).where(OrderItem.dosage_text_encrypted.is_not(None)),
            OrderItem.id,
            [("dosage_text_encrypted", lambda row: dosage_text_context(row.id))],
        ),
    ]
    changed = 0
    for query, id_column, columns in targets:
        for rows in locks.in_id_batches(session, query, id_column, batch=batch):
            for row in rows:
                touched = False
                for column, context_of in columns:
                    value = getattr(row, column)
                    resealed = phi.reseal(value, context_of(row)) if value else None
                    if resealed is not None:
                        setattr(row, column, resealed)
                        touched = True
                changed += touched
            session.flush()
    return changed
