"""Who is signed in, and for how much longer.

Sign-in is Streamlit's own OIDC login (`st.login`, configured in the `[auth]` secrets with
`expose_tokens` including "access"). The staff member's role and state come from the API
(`GET /api/v1/users/me` with their access token) on every run, never from the token's claims,
so a deactivated or demoted user is refused at once.

Streamlit's login cookie lives 30 days and its tokens are never refreshed, so the portal keeps
its own limits: a session ends after UI_IDLE_MINUTES without activity and UI_ABSOLUTE_HOURS
after sign-in. Activity is kept per access token in the server process (shared by every tab of
the same sign-in, so opening a new tab does not reset it); an ended token is refused until the
user signs in again (which issues a new one).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import streamlit as st

from dashboards.api import ApiProblem, PortalApi, SessionExpired
from dashboards.settings import auth_problems, get_ui_settings

MEMBER_KEY = "portal.member"
ROLE_NAMES = {"admin": "admins", "doctor": "doctors"}


@dataclass(frozen=True)
class StaffMember:
    subject: str
    email: str | None
    role: str  # "admin" or "doctor", as the API knows it
    full_name: str | None
    user_id: str
    access_token: str

    @property
    def display_name(self) -> str:
        return self.full_name or self.email or self.subject


class SignInActivity:
    """Last activity and sign-in time per access token, and the tokens whose session ended."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._ended: dict[str, float] = {}

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def ended_reason(
        self, token: str, *, signed_in_at: float | None, idle: float, absolute: float
    ) -> str | None:
        """Why this token's session is over (None while it lasts); records it as ended."""
        key = self.key(token)
        now = self._clock()
        with self._lock:
            if key in self._ended:
                return "You signed out or your session ended. Sign in again to continue."
            first = signed_in_at or self._first.setdefault(key, now)
            last = self._last.get(key)
            reason = None
            if now - first > absolute:
                reason = (
                    f"Your session reached its limit of {absolute / 3600:g} hours."
                    " Sign in again to continue."
                )
            elif last is not None and now - last > idle:
                reason = (
                    f"Your session ended after {idle / 60:g} minutes without activity."
                    " Sign in again to continue."
                )
            if reason:
                self._end(key, now)
            return reason

    def touch(self, token: str) -> None:
        key = self.key(token)
        now = self._clock()
        with self._lock:
            self._first.setdefault(key, now)
            self._last[key] = now

    def end(self, token: str) -> None:
        with self._lock:
            self._end(self.key(token), self._clock())

    def _end(self, key: str, now: float) -> None:
        self._ended[key] = now
        self._last.pop(key, None)
        # Forget what no session can need any more (bounded memory on a long-running server).
        horizon = now - 8 * 24 * 3600
        for table in (self._first, self._last, self._ended):
            for stale in [k for k, at in table.items() if at < horizon]:
                del table[stale]


@st.cache_resource
def sign_in_activity() -> SignInActivity:
    """One per server process, shared by every session."""
    return SignInActivity()


def _signed_in_at(user: dict[str, Any]) -> float | None:
    """When the ID token was issued (its `iat`, or `auth_time`)."""
    for claim in ("auth_time", "iat"):
        value = user.get(claim)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _user() -> dict[str, Any]:
    return dict(st.user.to_dict())


def access_token() -> str | None:
    try:
        return st.user.tokens.to_dict().get("access")
    except (AttributeError, KeyError):
        return None


def sign_in_screen(message: str | None = None) -> NoReturn:
    """The page a signed-out user sees: one button to the identity provider."""
    st.title("Staff portal")
    if message:
        st.warning(message)
    else:
        st.write("Sign in with your clinic account to continue.")
    if st.button("Sign in", type="primary", key="portal.sign_in"):
        st.login()
    st.stop()


def refused_screen(message: str) -> NoReturn:
    """Signed in at the identity provider, but not let in by the portal."""
    st.title("Staff portal")
    st.error(message)
    if st.button("Sign out", key="portal.refused_sign_out"):
        st.logout()
    st.stop()


def establish() -> StaffMember:
    """The signed-in staff member for this run, or a screen that says why not (and stops)."""
    settings = get_ui_settings()
    try:
        auth = dict(st.secrets.get("auth", {}))
    except FileNotFoundError:
        auth = {}
    problems = auth_problems(auth, settings.environment)
    if problems:
        st.error("The staff portal is not configured for production:\n\n- " + "\n- ".join(problems))
        st.stop()
    if not _user().get("is_logged_in"):
        if not auth:
            st.title("Staff portal")
            st.error(
                "Sign-in is not configured: Streamlit's secrets have no `[auth]` section"
                ' (`portal up` writes one for development; see the README, "Staff portal").'
            )
            st.stop()
        sign_in_screen()
    token = access_token()
    if not token:
        refused_screen(
            "The sign-in did not give the portal an access token. An administrator must add"
            ' `expose_tokens = ["id", "access"]` to the `[auth]` settings.'
        )
    user = _user()
    activity = sign_in_activity()
    reason = activity.ended_reason(
        token,
        signed_in_at=_signed_in_at(user),
        idle=settings.idle_seconds,
        absolute=settings.absolute_seconds,
    )
    if reason:
        st.session_state.pop(MEMBER_KEY, None)
        sign_in_screen(reason)
    api = PortalApi(settings.ui_api_url, token, timeout=settings.ui_api_timeout_seconds)
    try:
        me = api.get("/users/me")
    except SessionExpired:
        activity.end(token)
        st.session_state.pop(MEMBER_KEY, None)
        sign_in_screen("Your sign-in has expired or was revoked. Sign in again to continue.")
    except ApiProblem as problem:
        st.session_state.pop(MEMBER_KEY, None)
        if problem.status == 403:
            refused_screen(
                "Your account may not use the staff portal"
                f" ({problem.detail or problem.title}). Ask an administrator."
            )
        st.title("Staff portal")
        st.error(f"{problem.title}. {problem.detail}".strip())
        st.stop()
    finally:
        api.close()
    if not me.get("active", False) or me.get("role") not in ROLE_NAMES:
        activity.end(token)
        st.session_state.pop(MEMBER_KEY, None)
        refused_screen("Your account is deactivated. Ask an administrator to reactivate it.")
    activity.touch(token)
    member = StaffMember(
        subject=str(user.get("sub") or me.get("email") or me["id"]),
        email=me.get("email"),
        role=str(me["role"]),
        full_name=me.get("full_name") or user.get("name"),
        user_id=str(me["id"]),
        access_token=token,
    )
    st.session_state[MEMBER_KEY] = member
    return member


def current_member() -> StaffMember:
    """The member `establish` found in this run (app.py runs it before any page)."""
    member = st.session_state.get(MEMBER_KEY)
    if not isinstance(member, StaffMember):
        member = establish()
    return member


def require_role(*roles: str) -> StaffMember:
    """First line of every page: the member, if their role may open it; otherwise a plain
    message and the page stops (also when the page was opened by its URL)."""
    member = current_member()
    if member.role not in roles:
        allowed = " and ".join(ROLE_NAMES.get(role, role) for role in roles)
        st.error(f"This page is for {allowed} only. Choose a page from the menu.")
        st.stop()
    return member


def api() -> PortalApi:
    """The API as the signed-in member (one client per run; closed with the session)."""
    member = current_member()
    settings = get_ui_settings()
    cached = st.session_state.get("portal.api")
    if isinstance(cached, PortalApi) and st.session_state.get("portal.api_token") == (
        SignInActivity.key(member.access_token)
    ):
        return cached
    if isinstance(cached, PortalApi):  # a client of an earlier sign-in
        cached.close()
    client = PortalApi(
        settings.ui_api_url, member.access_token, timeout=settings.ui_api_timeout_seconds
    )
    st.session_state["portal.api"] = client
    st.session_state["portal.api_token"] = SignInActivity.key(member.access_token)
    return client


def session_expired() -> NoReturn:
    """The API refused the token mid-page: end the session and ask for a new sign-in."""
    token = access_token()
    if token:
        sign_in_activity().end(token)
    st.session_state.pop(MEMBER_KEY, None)
    sign_in_screen("Your sign-in has expired or was revoked. Sign in again to continue.")


def sign_out() -> None:
    """End this sign-in here (the token is refused from now on) and at the provider."""
    token = access_token()
    if token:
        sign_in_activity().end(token)
    st.session_state.clear()
    st.logout()
