"""Every lock the application takes, and the one order it takes them in.

A transaction that needs several of these takes them in this order, top to bottom, and never
goes back up; that is what keeps concurrent writers from deadlocking:

0. a payment reconciliation (one at a time; its repairs then lock payments and orders);
1. an outbox message being recorded as delivered (its follow-up step may lock what follows);
2. the self-order advisory lock on a patient's e-mail (before the patient, order and lots);
3. a payment (the webhook and the refund record start here);
4. an order (one by id, or a batch of unpaid ones past their window, SKIP LOCKED);
4b. the order's pharmacy submissions, in id order (cancelling a paid order);
5. lots, all of them in one statement, in lot-id order (reservation, release, fulfilment);
6. an alert topic's advisory lock (app.alerts.flows.sync_alerts), so one sweep of a topic at a
   time opens and clears its alerts; taken after anything above, held until the commit.

Taken alone, never together with the above: a product (catalog edits), a lot's status change,
a user, a patient (edits and key rotation, in id order), a checkout link (date-of-birth
guesses), the outbox claim (SKIP LOCKED, no lock held while delivering), a pharmacy (edits;
the default one's change locks the current default too, in id order), the pharmacy
submissions' claim (SKIP LOCKED) and one pharmacy submission (recording a delivery or a poll).

The audit chain's advisory lock is taken last of all, by the sealer alone, in a transaction of
its own: writing an audit row takes no lock. No lock is ever held across a call to Stripe, a
pharmacy or a mail server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from app.models import (
    CheckoutLink,
    Lot,
    Order,
    OutboxMessage,
    Payment,
    Pharmacy,
    PharmacySubmission,
    Product,
    User,
)
from app.models.status import OutboxStatus, PharmacySubmissionStatus

# Arbitrary constants naming the advisory locks (the first key of a pair, or the only key).
SELF_ORDER_LOCK = 0x5053_4F4C  # "PSOL"
AUDIT_CHAIN_LOCK = 0x5041_5544  # "PAUD"
RECONCILIATION_LOCK = 0x5052_4543  # "PREC"
ALERT_TOPIC_LOCK = 0x5041_4C54  # "PALT"

Columns = TypeVarTuple("Columns")


# -- 0. reconciliation -----------------------------------------------------------------------
def reconciliation(session: Session) -> None:
    """One payment reconciliation compares and repairs at a time, until its transaction ends:
    a second one of the same period then sees the first one's repairs, never repeats them."""
    session.execute(select(func.pg_advisory_xact_lock(RECONCILIATION_LOCK)))


# -- 1. outbox --------------------------------------------------------------------------------
def outbox_message(session: Session, message_id: uuid.UUID) -> OutboxMessage | None:
    return session.get(OutboxMessage, message_id, with_for_update=True)


def claim_due_outbox_messages(
    session: Session, topics: list[str], *, now: datetime, limit: int
) -> list[OutboxMessage]:
    """Pending messages due now and not claimed by a live lease; rows another worker is
    claiming are skipped (SKIP LOCKED), never waited for."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.status == OutboxStatus.PENDING,
                OutboxMessage.topic.in_(topics),
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
            )
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


# -- 2. self-order --------------------------------------------------------------------------
def self_order_email(session: Session, email_hash: str) -> None:
    """One self-order per e-mail at a time, until the transaction ends."""
    key = int(email_hash[:8], 16) - 2**31  # a signed 32-bit key from the e-mail's hash
    session.execute(select(func.pg_advisory_xact_lock(SELF_ORDER_LOCK, key)))


# -- 3. payment -----------------------------------------------------------------------------
def payment_by_intent(session: Session, payment_intent_id: str) -> Payment | None:
    return session.scalar(
        select(Payment)
        .where(Payment.stripe_payment_intent_id == payment_intent_id)
        .with_for_update()
    )


def payment(session: Session, payment_id: uuid.UUID) -> Payment | None:
    return session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())


# -- 4. order -------------------------------------------------------------------------------
def order(session: Session, order_id: uuid.UUID) -> Order | None:
    return session.get(Order, order_id, with_for_update=True)


def order_of(session: Session, query: Select[Order]) -> Order | None:
    """The order `query` selects (joined to what decides visibility), only its row locked."""
    return session.scalar(query.with_for_update(of=Order))


def claim_expired_orders(
    session: Session, condition: ColumnElement[bool], *, limit: int
) -> list[Order]:
    """Orders matching `condition`, oldest window first; those a concurrent payment holds are
    skipped (SKIP LOCKED) and left for the next run."""
    return list(
        session.scalars(
            select(Order)
            .where(condition)
            .order_by(Order.expires_at, Order.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def in_id_batches(
    session: Session, query: Select[Any], id_column: Any, *, batch: int
) -> Iterator[list[Any]]:
    """The query's rows in batches, each locked in id order (key rotation of patients, orders'
    notes and queued messages); the caller flushes each batch before asking for the next."""
    last: Any = None
    while True:
        page = query.order_by(id_column).with_for_update().limit(batch)
        if last is not None:
            page = page.where(id_column > last)
        rows = list(session.scalars(page))
        if not rows:
            return
        yield rows
        last = getattr(rows[-1], id_column.key)


# -- 4b. an order's pharmacy submissions -----------------------------------------------------
def pharmacy_submissions_of_order(
    session: Session, order_id: uuid.UUID
) -> list[PharmacySubmission]:
    """The order's submissions, locked in id order and re-read (a delivery or a poll may have
    moved them since they were last loaded)."""
    return list(
        session.scalars(
            select(PharmacySubmission)
            .where(PharmacySubmission.order_id == order_id)
            .order_by(PharmacySubmission.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


# -- 5. lots --------------------------------------------------------------------------------
def lots_where(session: Session, condition: ColumnElement[bool]) -> None:
    """Lock lots in one statement, in id order, before releasing any.

    Releasing some lots and then locking more to reserve would lock in two rounds and can
    deadlock with a concurrent reservation holding a lower lot while it waits for a higher one.
    """
    session.execute(select(Lot.id).where(condition).order_by(Lot.id).with_for_update())


def lots_of(query: Select[*Columns]) -> Select[*Columns]:
    """`query` (joined to lots) with its lots locked in one statement, in id order."""
    return query.order_by(Lot.id).with_for_update(of=Lot)


# -- 6. alert topic ---------------------------------------------------------------------------
def alert_topic(session: Session, topic: str) -> None:
    """One sweep of `topic`'s alerts at a time, until the transaction ends (the partial unique
    index on open alerts is the backstop)."""
    session.execute(select(func.pg_advisory_xact_lock(ALERT_TOPIC_LOCK, func.hashtext(topic))))


# -- taken alone ------------------------------------------------------------------------------
def lot(session: Session, lot_id: uuid.UUID) -> Lot | None:
    return session.get(Lot, lot_id, with_for_update=True)


def product(session: Session, product_id: uuid.UUID) -> Product | None:
    return session.get(Product, product_id, with_for_update=True)


def user(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id, with_for_update=True)


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email).with_for_update())


def row_of(query: Select[*Columns]) -> Select[*Columns]:
    """The single row `query` selects (e.g. a visible patient), locked."""
    return query.with_for_update()


def checkout_link(session: Session, link: CheckoutLink) -> None:
    """Re-read the link's counters under its row lock."""
    session.refresh(link, with_for_update=True)


def pharmacy(session: Session, pharmacy_id: uuid.UUID) -> Pharmacy | None:
    return session.get(Pharmacy, pharmacy_id, with_for_update=True, populate_existing=True)


def pharmacies_where(session: Session, condition: ColumnElement[bool]) -> list[Pharmacy]:
    """Pharmacies matching `condition` (e.g. the current default and the one becoming it),
    locked in one statement, in id order."""
    return list(
        session.scalars(
            select(Pharmacy)
            .where(condition)
            .order_by(Pharmacy.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def claim_due_pharmacy_submissions(
    session: Session, *, now: datetime, limit: int
) -> list[PharmacySubmission]:
    """Submissions due now: pending ones whose retry time has come, and `sending` ones whose
    worker's lease lapsed (it died mid-send). Rows another worker is claiming are skipped."""
    due = or_(
        (PharmacySubmission.status == PharmacySubmissionStatus.PENDING)
        & (PharmacySubmission.next_attempt_at <= now),
        (PharmacySubmission.status == PharmacySubmissionStatus.SENDING)
        & (PharmacySubmission.claimed_until < now),
    )
    return list(
        session.scalars(
            select(PharmacySubmission)
            .where(due)
            .order_by(PharmacySubmission.next_attempt_at, PharmacySubmission.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def pharmacy_submission(session: Session, submission_id: uuid.UUID) -> PharmacySubmission | None:
    return session.get(
        PharmacySubmission, submission_id, with_for_update=True, populate_existing=True
    )


def try_audit_chain(session: Session) -> bool:
    """The sealer's lock, for the rest of its own transaction; False if another sealer has it."""
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(AUDIT_CHAIN_LOCK))))
