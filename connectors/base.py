"""The interface every pharmacy connector implements, and the plain data it is given.

The portal turns its own rows into these frozen dataclasses (only what a pharmacy needs to
dispense), hands them to a connector chosen by name, and records every HTTP exchange the
connector reports. A connector raises `TransientError` for what a retry may cure (5xx,
timeouts, connection refused) and `PermanentError` for a refusal (validation errors,
OperationOutcome errors), carrying the pharmacy's message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Literal, Protocol

AuthKind = Literal["none", "api_key", "oauth2", "mtls"]


@dataclass(frozen=True)
class PharmacyPatient:
    """Only what a pharmacy needs to dispense. `reference` is scoped to one pharmacy and is
    never the portal's own patient id."""

    reference: str
    given_name: str
    family_name: str
    birth_date: date
    phone: str | None


@dataclass(frozen=True)
class Prescriber:
    reference: str
    display: str | None


@dataclass(frozen=True)
class PrescriptionItem:
    """One prescribed product; `identifier` is stable per order item so that a re-sent
    submission is recognised by the pharmacy."""

    identifier: str
    sku: str
    display: str
    rxnorm: str | None
    ndc: str | None
    quantity: int
    dosage_text: str
    validity_days: int


@dataclass(frozen=True)
class Submission:
    id: str
    order_reference: str
    patient: PharmacyPatient
    prescriber: Prescriber
    authored_on: datetime
    items: tuple[PrescriptionItem, ...]


@dataclass(frozen=True)
class PharmacyAuth:
    kind: AuthKind = "none"
    header: str | None = None
    api_key: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:  # never show a secret in a traceback or a log line
        return f"PharmacyAuth(kind={self.kind!r})"


@dataclass(frozen=True)
class PharmacyConfig:
    name: str
    connector: str
    base_url: str
    auth: PharmacyAuth = field(default_factory=PharmacyAuth)
    mapping: Mapping[str, object] = field(default_factory=dict)
    timeout_seconds: float = 10.0


class PharmacyStatus(StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SubmitResult:
    external_id: str | None
    status: PharmacyStatus
    message: str | None = None


@dataclass(frozen=True)
class StatusResult:
    status: PharmacyStatus
    dispenses: tuple[Mapping[str, object], ...] = ()
    message: str | None = None


class ConnectorError(Exception):
    """Anything a connector could not do; `message` is safe to store and show to admins."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientError(ConnectorError):
    """A retry may succeed: 5xx, timeout, connection refused."""


class PermanentError(ConnectorError):
    """The pharmacy refused; re-sending the same thing will not help (dead-letter)."""


class NotCancellable(ConnectorError):
    """The pharmacy has already dispensed; the request can no longer be cancelled."""


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange, secrets already removed from the URL, headers and bodies."""

    method: str
    url: str
    request_headers: Mapping[str, str]
    request_body: str | None
    status_code: int | None
    response_headers: Mapping[str, str]
    response_body: str | None
    duration_ms: float
    error: str | None = None


Recorder = Callable[[Exchange], None]


class Connector(Protocol):
    def submit(self, submission: Submission) -> SubmitResult: ...

    def fetch_status(self, submission: Submission, external_id: str) -> StatusResult: ...

    def cancel(self, submission: Submission, external_id: str) -> None: ...

    def healthcheck(self) -> None: ...
