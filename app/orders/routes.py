from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.db import DbSession
from app.errors import (
    Conflict,
    InsufficientStock,
    InvalidStateTransition,
    NotFound,
    problem_responses,
)
from app.models import Order
from app.models.status import CancellationReason, OrderStatus
from app.notifications.service import InvalidRecipient
from app.orders import flows, service, timeline
from app.orders.schemas import (
    CheckoutLinkOut,
    OrderCancel,
    OrderCreate,
    OrderCreated,
    OrderEdit,
    OrderOut,
    OrderReference,
    OrderSummary,
    OrderTimeline,
)
from app.pagination import Cursor, Limit, Page
from app.pharmacy import service as pharmacy_service
from app.pharmacy.service import (
    AlreadyDispensed,
    PharmacyRefused,
    PharmacyUnavailable,
    SubmissionInFlight,
)
from app.security import AdminActor, StaffActor

router = APIRouter(prefix="/orders", tags=["orders"])


@router.post(
    "",
    response_model=OrderCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(NotFound, InsufficientStock, Conflict, InvalidRecipient),
)
def create_order(data: OrderCreate, actor: StaffActor, session: DbSession) -> OrderCreated:
    """Order for a patient: prices captured now, stock reserved first-expiry-first-out.

    409 `/problems/insufficient-stock` names the product, what was asked and what is available;
    then nothing is reserved for any item.
    """
    placed = flows.place_order(session, actor, data)
    view = service.order_view(placed.created.parts)
    return OrderCreated(**dict(view), checkout_url=placed.checkout_url)


@router.get("", response_model=Page[OrderSummary])
def list_orders(
    actor: StaffActor,
    session: DbSession,
    status: Annotated[OrderStatus | None, Query()] = None,
    patient_id: Annotated[uuid.UUID | None, Query()] = None,
    doctor_id: Annotated[uuid.UUID | None, Query()] = None,
    reference: Annotated[
        OrderReference | None,
        Query(description="The order's reference as the patient sees it (8 characters)"),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OrderSummary]:
    """Newest first, each with its payment state (latest payment's status, refunds, dispute)
    and where its prescriptions stand at the pharmacy. Doctors see the orders of their own
    patients."""
    orders = service.list_orders(
        session,
        actor,
        status=status,
        patient_id=patient_id,
        doctor_id=doctor_id,
        reference=reference,
        limit=limit,
        cursor=cursor,
    )
    ids = [order.id for order in orders.rows]
    payments = service.payment_states(session, ids)
    pharmacy = pharmacy_service.submission_statuses(session, ids)

    def summary(order: Order) -> OrderSummary:
        paid = payments.get(order.id, service.PaymentState())
        return OrderSummary.model_validate(order, from_attributes=True).model_copy(
            update={
                "payment_status": paid.status,
                "refunded_cents": paid.refunded_cents,
                "disputed": paid.disputed,
                "pharmacy_statuses": pharmacy.get(order.id, []),
            }
        )

    return orders.map(summary).page()


@router.get("/{order_id}", response_model=OrderOut)
def get_order(order_id: uuid.UUID, actor: StaffActor, session: DbSession) -> OrderOut:
    order = service.get_visible_order(session, actor, order_id)
    return service.order_view(service.load_order(session, actor, order, audit_read=True))


@router.get("/{order_id}/timeline", response_model=OrderTimeline)
def get_order_timeline(order_id: uuid.UUID, actor: StaffActor, session: DbSession) -> OrderTimeline:
    """The order's milestones, oldest first: created, edited, payment link e-mailed (and whether
    it was delivered), payment started/failed, paid, each pharmacy step (queued, submitted,
    accepted, dispensed, ...), fulfilled, cancelled (with the reason code), refunds, disputes.
    Built from the audit log and the outbox; it carries no personal details, items or notes, so
    reading it is not a PHI read. Doctors: the orders of their own patients (others: 404)."""
    order = service.get_visible_order(session, actor, order_id)
    return timeline.order_timeline(session, order)


@router.patch(
    "/{order_id}",
    response_model=OrderOut,
    responses=problem_responses(InsufficientStock, InvalidStateTransition, Conflict),
)
def edit_order(
    order_id: uuid.UUID, data: OrderEdit, actor: StaffActor, session: DbSession
) -> OrderOut:
    """Replace the items of a pending order; stock is re-reserved all or nothing."""
    order = flows.edit_order(session, actor, order_id, data.items)
    return service.order_view(service.load_order(session, actor, order))


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses=problem_responses(
        InvalidStateTransition,
        InvalidRecipient,
        AlreadyDispensed,
        PharmacyRefused,
        PharmacyUnavailable,
        SubmissionInFlight,
    ),
)
def cancel_order(
    order_id: uuid.UUID, actor: StaffActor, session: DbSession, data: OrderCancel | None = None
) -> OrderOut:
    """Cancel a pending or paid order and release its stock (a paid one is refunded).

    `reason` is a code; details go in `note`, stored encrypted. Without a body: `other`.
    """
    reason = CancellationReason(data.reason) if data else CancellationReason.OTHER
    order = flows.cancel_order(session, actor, order_id, reason, data.note if data else None)
    return service.order_view(service.load_order(session, actor, order))


@router.post(
    "/{order_id}/checkout-link",
    response_model=CheckoutLinkOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(InvalidStateTransition, InvalidRecipient),
)
def issue_checkout_link(
    order_id: uuid.UUID, actor: StaffActor, session: DbSession
) -> CheckoutLinkOut:
    """A new payment link for a pending order; earlier links stop working."""
    order, url = flows.issue_checkout_link(session, actor, order_id)
    return CheckoutLinkOut(order_id=order.id, checkout_url=url, expires_at=order.expires_at)


@router.post("/{order_id}/checkout-link/revoke", status_code=status.HTTP_204_NO_CONTENT)
def revoke_checkout_links(order_id: uuid.UUID, actor: StaffActor, session: DbSession) -> None:
    """Withdraw every payment link of the order."""
    flows.revoke_checkout_links(session, actor, order_id)


@router.post(
    "/{order_id}/fulfil",
    response_model=OrderOut,
    responses=problem_responses(
        InvalidStateTransition, service.PaymentRefunded, service.PaymentDisputed
    ),
)
def fulfil_order(order_id: uuid.UUID, actor: AdminActor, session: DbSession) -> OrderOut:
    """Ship a paid order: its reserved units leave stock. A payment refunded in full or
    disputed stops it (409 `/problems/payment-refunded`, `/problems/payment-disputed`)."""
    order = flows.fulfil_order(session, actor, order_id)
    return service.order_view(service.load_order(session, actor, order))
