"""Who may start a payment: staff with a bearer token, or the patient through their checkout
cookie (verified by date of birth). One dependency, declared on the route like every role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Cookie, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from app import http
from app.actor import Actor, Role
from app.checkout import service
from app.checkout.service import COOKIE_NAME
from app.db import DbSession
from app.errors import (
    EmailAlreadyLinked,
    EmailNotVerified,
    Forbidden,
    IdentityProviderUnavailable,
    NotAuthenticated,
    raises,
)
from app.models import CheckoutLink, Order
from app.models.status import LinkState
from app.security import bearer_scheme, current_actor


@dataclass(frozen=True)
class Payer:
    actor: Actor
    # Set when the patient pays through a checkout link: the only order they may pay.
    order_id: uuid.UUID | None = None


@raises(
    NotAuthenticated, Forbidden, EmailNotVerified, EmailAlreadyLinked, IdentityProviderUnavailable
)
def payer(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Cookie(alias=COOKIE_NAME)] = None,
) -> Payer:
    if credentials is not None:
        actor = current_actor(request, session, credentials)
        if actor.role not in (Role.ADMIN, Role.DOCTOR):
            raise Forbidden("this action needs the role admin or doctor")
        return Payer(actor)
    checkout = service.read_cookie(cookie)
    if checkout is None or not checkout.verified:
        raise NotAuthenticated(
            "send a staff access token, or open your payment link first", error=""
        )
    link = session.get(CheckoutLink, checkout.link_id)
    order = session.get(Order, link.order_id) if link else None
    if link is None or service.state_of(link, order) != LinkState.VALID:
        raise NotAuthenticated("the payment link is no longer valid", error="")
    client = http.client_address(request)
    return Payer(service.link_actor(link, client), order_id=link.order_id)


payer.__portal_roles__ = frozenset({Role.ADMIN, Role.DOCTOR, Role.CHECKOUT_LINK})  # type: ignore[attr-defined]

PayerDep = Annotated[Payer, Depends(payer)]
