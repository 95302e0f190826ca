"""The staff portal: `streamlit run dashboards/app.py` (`portal up` starts it on :8501).

Each run: the page set-up, the signed-in staff member (or the sign-in screen), the menu of their
role, then the chosen page. An API problem a page does not handle is shown in plain words; an
expired or revoked sign-in leads back to the sign-in screen.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboards/app.py` puts dashboards/ on the path, not the project.
_PROJECT = str(Path(__file__).resolve().parent.parent)
if _PROJECT not in sys.path:
    sys.path.insert(0, _PROJECT)

import streamlit as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from dashboards import navigation, session, ui  # noqa: E402
from dashboards.api import ApiProblem  # noqa: E402


@st.cache_resource
def favicon() -> Image.Image:
    """A cross drawn here: Streamlit fetches a `:material/...:` page icon from Google's CDN,
    and the portal loads nothing from the internet."""
    icon = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((0, 0, 31, 31), radius=6, fill=(21, 101, 192, 255))
    draw.rectangle((13, 6, 18, 25), fill="white")
    draw.rectangle((6, 13, 25, 18), fill="white")
    return icon


def main() -> None:
    st.set_page_config(
        page_title="Staff portal",
        page_icon=favicon(),
        layout="wide",
        initial_sidebar_state="auto",
    )
    member = session.establish()
    with st.sidebar:
        st.markdown(f"**{member.display_name}**  \n{member.role.capitalize()}")
        if st.button("Sign out", key="portal.sign_out", icon=":material/logout:"):
            session.sign_out()
    pages = navigation.pages_for(member.role)
    if not pages:
        st.error("No page is available for your role yet.")
        st.stop()
    page = st.navigation(pages, position="sidebar")
    try:
        page.run()
    except ApiProblem as problem:
        ui.show_problem(problem)


main()
