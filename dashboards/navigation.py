"""The pages each role sees, in menu order. `app.py` builds `st.navigation` from these.

Every page of the agreed layout is listed here, helper pages included; a page whose file is not
in `dashboards/pages/` yet is left out of the menu, so adding a page is adding its file (and,
for a page not listed, one line here). Each page still starts with `session.require_role(...)`:
the menu decides what a role is offered, the page what it may open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"


@dataclass(frozen=True)
class PortalPage:
    file: str  # under dashboards/pages/
    title: str
    icon: str
    url_path: str  # unique across roles (the URL a page is opened by)

    @property
    def path(self) -> Path:
        return PAGES / self.file

    def page(self, *, default: bool = False) -> st.Page:
        return st.Page(
            self.path, title=self.title, icon=self.icon, url_path=self.url_path, default=default
        )


ADMIN_PAGES = [
    PortalPage("admin/overview.py", "Overview", ":material/monitoring:", "overview"),
    PortalPage("admin/orders.py", "Orders and payments", ":material/receipt_long:", "orders"),
    PortalPage("admin/inventory.py", "Inventory", ":material/inventory_2:", "inventory"),
    PortalPage("admin/products.py", "Products", ":material/medication:", "products"),
    PortalPage("admin/users.py", "Users", ":material/group:", "users"),
    PortalPage("admin/pharmacy.py", "Pharmacy", ":material/local_pharmacy:", "pharmacy"),
    PortalPage("admin/audit.py", "Audit log", ":material/policy:", "audit"),
    PortalPage("admin/system_logs.py", "System logs", ":material/terminal:", "system-logs"),
    PortalPage("admin/exports.py", "Exports", ":material/download:", "exports"),
]

DOCTOR_PAGES = [
    PortalPage("doctor/patients.py", "My patients", ":material/person:", "my-patients"),
    PortalPage("doctor/new_order.py", "New order", ":material/add_shopping_cart:", "new-order"),
    PortalPage("doctor/orders.py", "My orders", ":material/receipt:", "my-orders"),
    PortalPage("doctor/inventory.py", "Inventory", ":material/inventory_2:", "doctor-inventory"),
]

PAGES_BY_ROLE = {"admin": ADMIN_PAGES, "doctor": DOCTOR_PAGES}


def available(role: str) -> list[PortalPage]:
    """The role's pages whose files exist, in menu order."""
    return [page for page in PAGES_BY_ROLE.get(role, []) if page.path.is_file()]


def pages_for(role: str) -> list[st.Page]:
    """`st.Page`s of the role (the first one is the default), for `st.navigation`."""
    return [page.page(default=i == 0) for i, page in enumerate(available(role))]
