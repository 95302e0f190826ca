from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.models.status import (
    PharmacyAuthKind,
    PharmacyExchangeOutcome,
    PharmacyOperation,
    PharmacySubmissionStatus,
)
from app.schemas import StrictInput

MAX_MAPPING_BYTES = 16_384


def _small_mapping(value: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(value)
    if len(text) > MAX_MAPPING_BYTES:
        raise ValueError(f"must be at most {MAX_MAPPING_BYTES} bytes of JSON")
    if "\\u0000" in text:  # PostgreSQL's jsonb cannot store U+0000
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


PharmacyName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ConnectorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# http(s), a host name or address and a port, a path; no credentials, query or fragment (the
# auth settings carry credentials).
HttpUrl = Annotated[
    str,
    StringConstraints(
        max_length=500,
        pattern=r"^https?://[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?"
        r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$",
    ),
]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,100}$")]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[\x21-\x7e]+$")]
ClientId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]
Scope = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$")]
FilePath = Annotated[
    str, StringConstraints(min_length=1, max_length=500, pattern=r"^/[^\x00-\x1f]*$")
]
Mapping = Annotated[dict[str, Any], AfterValidator(_small_mapping)]
Timeout = Annotated[float, Field(gt=0, le=120)]

WRITE_ONLY = "Write-only: stored encrypted, never returned (see `{}_set`)."


class PharmacyFields(StrictInput):
    """What configures a pharmacy; the auth fields needed depend on `auth_kind`."""

    auth_header: HeaderName | None = Field(
        default=None, description="The API key's header (the connector's default when unset)"
    )
    api_key: Secret | None = Field(default=None, description=WRITE_ONLY.format("api_key"))
    token_url: HttpUrl | None = None
    client_id: ClientId | None = None
    client_secret: Secret | None = Field(
        default=None, description=WRITE_ONLY.format("client_secret")
    )
    scope: Scope | None = None
    cert_file: FilePath | None = Field(default=None, description="Client certificate (mTLS)")
    key_file: FilePath | None = Field(default=None, description="Client key file (mTLS)")
    ca_file: FilePath | None = Field(default=None, description="CA bundle to verify the pharmacy")


class PharmacyCreate(PharmacyFields):
    name: PharmacyName
    connector: ConnectorName = Field(description="A registered connector: fhir_r4, vendor_json")
    base_url: HttpUrl
    auth_kind: PharmacyAuthKind = PharmacyAuthKind.NONE
    mapping: Mapping = Field(default_factory=dict, description="The connector's field mapping")
    timeout_seconds: Timeout = 10.0
    active: bool = Field(default=True, strict=True)
    is_default: bool = Field(
        default=False, strict=True, description="Fills every product without a pharmacy of its own"
    )


# A field that may be left out of an update but never set to null (the schema shows no null).
NotNull = SkipJsonSchema[None]
NOT_NULL = (
    "name",
    "connector",
    "base_url",
    "auth_kind",
    "mapping",
    "timeout_seconds",
    "active",
    "is_default",
)


class PharmacyUpdate(PharmacyFields):
    """Only the fields given change; `null` clears an optional one (the others take no null)."""

    name: PharmacyName | NotNull = None
    connector: ConnectorName | NotNull = None
    base_url: HttpUrl | NotNull = None
    auth_kind: PharmacyAuthKind | NotNull = None
    mapping: Mapping | NotNull = None
    timeout_seconds: Timeout | NotNull = None
    active: Annotated[bool, Field(strict=True)] | NotNull = None
    is_default: Annotated[bool, Field(strict=True)] | NotNull = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> PharmacyUpdate:
        for name in NOT_NULL:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class PharmacyOut(BaseModel):
    id: uuid.UUID
    name: str
    connector: str
    base_url: str
    auth_kind: PharmacyAuthKind
    auth_header: str | None
    api_key_set: bool
    token_url: str | None
    client_id: str | None
    client_secret_set: bool
    scope: str | None
    cert_file: str | None
    key_file: str | None
    ca_file: str | None
    mapping: dict[str, Any]
    timeout_seconds: float
    active: bool
    is_default: bool
    created_at: datetime
    updated_at: datetime | None


class ConnectionTest(BaseModel):
    pharmacy_id: uuid.UUID
    ok: bool
    message: str | None = Field(description="The pharmacy's (or the connection's) error")
    duration_ms: float


class DispenseOut(BaseModel):
    summary: dict[str, Any] | None


class SubmissionOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    pharmacy_id: uuid.UUID | None
    pharmacy_name: str | None
    status: PharmacySubmissionStatus
    attempts: int
    next_attempt_at: datetime
    claimed_until: datetime | None
    last_error: str | None
    external_id: str | None
    dispense: dict[str, Any] | None
    cancel_requested_at: datetime | None
    created_at: datetime
    submitted_at: datetime | None
    accepted_at: datetime | None
    dispensed_at: datetime | None
    cancelled_at: datetime | None
    updated_at: datetime | None


class AttemptOut(BaseModel):
    """One exchange of the submission, without its bodies (see `/logs`)."""

    id: uuid.UUID
    attempt: int
    operation: PharmacyOperation
    method: str
    url: str
    status_code: int | None
    duration_ms: float
    outcome: PharmacyExchangeOutcome
    error: str | None
    at: datetime


class SubmissionDetail(SubmissionOut):
    order_item_ids: list[uuid.UUID]
    exchanges: list[AttemptOut]


class LogOut(AttemptOut):
    """One exchange with its headers (secrets removed) and bodies (decrypted: PHI)."""

    request_headers: dict[str, Any]
    request_body: str | None
    response_headers: dict[str, Any]
    response_body: str | None


class OrderPharmacyOut(BaseModel):
    """What an order's pharmacy did with it (one per pharmacy filling part of the order)."""

    submission_id: uuid.UUID
    pharmacy_name: str | None
    status: PharmacySubmissionStatus
    last_error: str | None
    submitted_at: datetime | None
    accepted_at: datetime | None
    dispensed_at: datetime | None
    cancelled_at: datetime | None
    dispense: dict[str, Any] | None
