from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from app.db import DbSession
from app.errors import Conflict, DuplicateValue, problem_responses
from app.models import User
from app.pagination import Cursor, Limit, Page
from app.security import AdminActor, StaffActor
from app.users import service
from app.users.schemas import UserInvite, UserOut, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


def _out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        role=user.role,
        full_name=user.full_name,
        active=user.active,
        signed_in=user.oidc_subject is not None,
        created_at=user.created_at,
    )


@router.get("/me", response_model=UserOut)
def who_am_i(actor: StaffActor, session: DbSession) -> UserOut:
    assert actor.user_id is not None
    return _out(service.get_user(session, actor.user_id))


@router.get("", response_model=Page[UserOut])
def list_users(
    actor: AdminActor, session: DbSession, limit: Limit = 50, cursor: Cursor = None
) -> Page[UserOut]:
    return service.list_users(session, limit=limit, cursor=cursor).map(_out).page()


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(DuplicateValue),
)
def invite_user(data: UserInvite, actor: AdminActor, session: DbSession) -> UserOut:
    return _out(service.invite_user(session, actor, data))


# `:uuid` so that `/users/me` is not taken for a user id (PATCH /users/me: 405, not 422).
@router.patch(
    "/{user_id:uuid}",
    response_model=UserOut,
    responses=problem_responses(Conflict),
)
def update_user(
    user_id: uuid.UUID, data: UserUpdate, actor: AdminActor, session: DbSession, request: Request
) -> UserOut:
    """Change a role or (de)activate; this API process applies it at once, the others within
    `SIGNED_IN_USER_CACHE_SECONDS`."""
    user = service.update_user(session, actor, user_id, data)
    if user.oidc_subject is not None:
        request.app.state.signed_in_users.discard(user.oidc_subject)
    return _out(user)
