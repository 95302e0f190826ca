"""Staff accounts: who may sign in, with which role. Identity itself lives at the OIDC issuer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import locks
from app.actor import Actor, Role
from app.audit import service as audit
from app.errors import (
    Conflict,
    DuplicateValue,
    EmailAlreadyLinked,
    EmailNotVerified,
    Forbidden,
    NotFound,
)
from app.models import User
from app.models.status import StaffRole
from app.pagination import Keyset, KeysetPage
from app.users.schemas import UserInvite, UserUpdate


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """What a request needs of the signed-in user's row (each API process keeps these for
    SIGNED_IN_USER_CACHE_SECONDS, in a `TtlCache` on `app.state.signed_in_users`)."""

    id: uuid.UUID
    role: Role
    email: str | None

    @classmethod
    def of(cls, user: User) -> SignedInUser:
        return cls(user.id, Role(user.role), user.email)


def user_fields(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "role": user.role,
        "full_name": user.full_name,
        "active": user.active,
        "oidc_subject": user.oidc_subject,
    }


# Set in `session.info` when resolving the signed-in user wrote its row (first sign-in or invite
# link): until that transaction commits, the row is no fact to cache.
WROTE_SIGNED_IN_USER = "wrote_signed_in_user"


def resolve_signed_in_user(
    session: Session,
    *,
    subject: str,
    email: str | None,
    email_verified: bool,
    claimed_role: Role | None,
    auto_provision: bool,
    via: Actor | None = None,
) -> User:
    """The `users` row of a verified token's subject.

    Once a row exists its role (managed by admins) wins over the token's claim. An admin may
    invite someone by e-mail before they first sign in; the first sign-in links the subject,
    but only when the identity provider says the e-mail is verified: anyone can put any
    address on an account at most providers, and an invitation may carry the admin role.
    An address already linked to another subject is refused rather than shared.
    """
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    # Addresses in `users` are ASCII (invitations are validated so). A token's non-ASCII address
    # is not used at all: `str.lower()` maps some look-alikes onto ASCII letters (the Kelvin
    # sign becomes "k"), which would let another address claim an invitation.
    email = email.lower() if email and email.isascii() else None
    via = via or Actor.system("oidc-sign-in")
    if user is None and email:
        holder = locks.user_by_email(session, email)
        if holder is not None and holder.oidc_subject is not None and email_verified:
            raise EmailAlreadyLinked(_EMAIL_ALREADY_LINKED)
        if holder is not None and holder.oidc_subject is None:
            if not email_verified:
                raise EmailNotVerified(
                    "an invitation for your e-mail address is waiting, but your identity"
                    " provider does not say the address is verified; verify it there and sign"
                    " in again"
                )
            holder.oidc_subject = subject
            audit.record(
                session,
                via,
                "user.linked",
                "user",
                holder.id,
                after={"oidc_subject": subject},
            )
            user = holder
            session.info[WROTE_SIGNED_IN_USER] = True
    if user is None:
        if claimed_role is None or not auto_provision:
            raise Forbidden("you have no portal account; ask an administrator to invite you")
        # Two first requests may race: a unique column decides. The loser of a race for the
        # subject reads the winner's row; the loser of one for the e-mail is refused.
        inserted = session.execute(
            insert(User)
            .values(
                id=uuid.uuid4(),
                # An address the provider does not vouch for is not kept: it would hold that
                # address against a later invitation of its real owner.
                email=email if email_verified else None,
                role=claimed_role.value,
                oidc_subject=subject,
            )
            .on_conflict_do_nothing()
            .returning(User.id)
        ).scalar()
        user = session.scalars(
            select(User)
            .where(User.oidc_subject == subject)
            .execution_options(populate_existing=True)
        ).one_or_none()
        if user is None:
            raise EmailAlreadyLinked(_EMAIL_ALREADY_LINKED)
        if inserted is not None:
            session.info[WROTE_SIGNED_IN_USER] = True
            audit.record(
                session,
                via,
                "user.provisioned",
                "user",
                user.id,
                after=user_fields(user),
            )
    if not user.active:
        raise Forbidden("your portal account is deactivated")
    return user


_EMAIL_ALREADY_LINKED = (
    "the e-mail address in your token belongs to a portal account that signs in with another"
    " identity; ask an administrator to resolve it"
)


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return user


OLDEST_FIRST = Keyset(User.created_at, User.id)


def list_users(session: Session, *, limit: int, cursor: str | None) -> KeysetPage[User]:
    return OLDEST_FIRST.scalars(session, select(User), limit=limit, cursor=cursor)


def invite_user(session: Session, actor: Actor, data: UserInvite) -> User:
    email = data.email.lower()
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise DuplicateValue(f"a user with e-mail {email} already exists", field="email")
    user = User(email=email, role=data.role, full_name=data.full_name, active=True)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent invite of the same address
        raise DuplicateValue(f"a user with e-mail {email} already exists", field="email") from exc
    audit.record(session, actor, "user.invited", "user", user.id, after=user_fields(user))
    return user


def update_user(session: Session, actor: Actor, user_id: uuid.UUID, data: UserUpdate) -> User:
    user = locks.user(session, user_id)
    if user is None:
        raise NotFound("user", user_id)
    changes = data.model_dump(exclude_unset=True)
    if user.id == actor.user_id and (
        changes.get("active") is False or changes.get("role", StaffRole.ADMIN) != StaffRole.ADMIN
    ):
        raise Conflict("you cannot deactivate yourself or remove your own admin role")
    before = user_fields(user)
    for field, value in changes.items():
        if value is None and field in ("role", "active"):
            continue
        setattr(user, field, value)
    after = user_fields(user)
    if after != before:
        audit.record(session, actor, "user.updated", "user", user.id, before=before, after=after)
    return user
