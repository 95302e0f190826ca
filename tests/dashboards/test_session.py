"""Who may use the staff portal, and for how long (AppTest of dashboards/app.py against the live
API and the development identity provider of `portal_stack`).

Every token here comes from the provider's real authorization-code flow; the API verifies it at
the provider's userinfo endpoint and reads the user's row, exactly as under `make run`.
"""

from __future__ import annotations

import time

import pytest

from dashboards.navigation import PAGES, available
from tests.fixtures.portal_ui import (
    PortalUiStack,
    add_staff,
    app_test,
    new_email,
    open_page,
    page_test,
    staff_token,
    texts,
    ui_environment_for,
)

AUTH_SECRETS = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "x" * 32,
    "client_id": "portal-dev",
    "client_secret": "portal-dev-secret",
    "server_metadata_url": "http://127.0.0.1:9400/.well-known/openid-configuration",
    "expose_tokens": ["id", "access"],
}


def menu(at: object) -> list[str]:
    """The titles of the pages the run registered with st.navigation, in menu order."""
    pages = at._registered_pages  # type: ignore[attr-defined]
    # A run that stops before st.navigation registers only the main script (app.py).
    return [
        info["page_name"]
        for info in pages.values()
        if str(PAGES) in str(info.get("script_path", ""))
    ]


def test_signed_out_visitor_sees_only_the_sign_in_button(portal_stack: PortalUiStack) -> None:
    with ui_environment_for(portal_stack):
        at = app_test(None)
        at.secrets["auth"] = AUTH_SECRETS
        at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Sign in with your clinic account" in texts(at)
    assert not at.dataframe


def test_each_role_gets_its_own_menu(portal_stack: PortalUiStack) -> None:
    with ui_environment_for(portal_stack):
        admin = app_test(staff_token(portal_stack, "admin")).run()
        doctor = app_test(staff_token(portal_stack, "doctor")).run()
    assert not admin.exception and not doctor.exception
    assert menu(admin) == [page.title for page in available("admin")]
    assert menu(doctor) == [page.title for page in available("doctor")]
    assert "Inventory" in menu(doctor)
    assert "Overview" in menu(admin)
    assert "Overview" not in menu(doctor)
    assert admin.sidebar.markdown[0].value == "**admin@demo.clinic**  \nAdmin"


def test_a_doctor_cannot_open_an_admin_page_from_the_menu_or_by_its_file(
    portal_stack: PortalUiStack,
) -> None:
    token = staff_token(portal_stack, "doctor")
    with ui_environment_for(portal_stack):
        at = app_test(token).run()
        # Not registered for a doctor: the app cannot switch to it (a URL falls back to the
        # doctor's default page; the browser test opens the URL).
        with pytest.raises(ValueError, match=r"not a registered page|Could not find"):
            open_page(at, "admin/overview.py")
        for file in [page.file for page in available("admin")]:
            page = page_test(file, token).run()
            assert not page.exception, file
            assert [e.value for e in page.error] == [
                "This page is for admins only. Choose a page from the menu."
            ], file
            assert not page.dataframe and not page.button, file


def test_a_deactivated_user_is_refused_at_once(portal_stack: PortalUiStack) -> None:
    email = new_email("leaving-doctor")
    add_staff(portal_stack.issuer, email, "doctor")
    token = staff_token(portal_stack, "doctor", email)
    admin = portal_stack.client(staff_token(portal_stack, "admin"))
    me = portal_stack.client(token).get("/users/me").raise_for_status().json()
    with ui_environment_for(portal_stack):
        assert menu(app_test(token, email=email).run()) == [p.title for p in available("doctor")]
        admin.patch(f"/users/{me['id']}", json={"active": False}).raise_for_status()
        at = app_test(token, email=email).run()
    assert not at.exception
    assert "deactivated" in at.error[0].value
    assert menu(at) == []
    assert [b.label for b in at.button] == ["Sign out"]


def test_a_revoked_or_expired_token_asks_to_sign_in_again(portal_stack: PortalUiStack) -> None:
    with ui_environment_for(portal_stack):
        at = app_test("revoked-" + "x" * 40)
        at.secrets["auth"] = AUTH_SECRETS
        at.run()
    assert not at.exception
    assert at.warning[0].value == (
        "Your sign-in has expired or was revoked. Sign in again to continue."
    )
    assert [b.label for b in at.button] == ["Sign in"]
    assert menu(at) == []


def test_the_session_ends_after_the_idle_limit(portal_stack: PortalUiStack) -> None:
    email = new_email("idle-admin")
    add_staff(portal_stack.issuer, email, "admin")
    token = staff_token(portal_stack, "admin", email)
    with ui_environment_for(portal_stack, UI_IDLE_MINUTES="0.01"):  # 0.6 s
        at = app_test(token, email=email)
        at.secrets["auth"] = AUTH_SECRETS
        at.run()
        assert menu(at), texts(at)
        time.sleep(0.8)
        at.run()
        assert "ended after 0.01 minutes without activity" in at.warning[0].value
        assert [b.label for b in at.button] == ["Sign in"]
        # Ended is ended: the same token is refused from now on (another tab, a reload).
        again = app_test(token, email=email)
        again.secrets["auth"] = AUTH_SECRETS
        again.run()
    assert "Sign in again" in again.warning[0].value
    assert menu(again) == []


def test_the_session_ends_at_the_absolute_limit(portal_stack: PortalUiStack) -> None:
    email = new_email("long-day-admin")
    add_staff(portal_stack.issuer, email, "admin")
    token = staff_token(portal_stack, "admin", email)
    with ui_environment_for(portal_stack):
        at = app_test(token, email=email)
        at.user = {**at.user, "iat": time.time() - 12 * 3600 - 60}
        at.secrets["auth"] = AUTH_SECRETS
        at.run()
    assert "reached its limit of 12 hours" in at.warning[0].value
    assert menu(at) == []


def test_production_refuses_development_sign_in_secrets(portal_stack: PortalUiStack) -> None:
    with ui_environment_for(
        portal_stack, ENVIRONMENT="production", UI_API_URL="https://api.clinic.example.org"
    ):
        at = app_test(None)
        at.secrets["auth"] = AUTH_SECRETS
        at.run()
    error = at.error[0].value
    assert "not configured for production" in error
    assert "client_secret is missing or the development default" in error
    assert "redirect_uri must be an https URL" in error
    assert not at.button
