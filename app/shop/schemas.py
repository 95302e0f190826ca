from __future__ import annotations

from app.patients.schemas import DateOfBirth
from app.schemas import EmailAddress, StrictInput


class OrdersLinkRequest(StrictInput):
    """The "my orders" form: who the patient says they are."""

    email: EmailAddress
    date_of_birth: DateOfBirth
