"""The configurable JSON connector (`vendor_json`): a vendor's own payload, endpoints and status
words come from `config.mapping`, not from code. A new JSON vendor is configuration only.

    {
      "submit": {"method": "POST", "path": "/orders",
                 "headers": {"Idempotency-Key": "submission.id"}},
      "body": {                                  # target path <- source
        "order.ref": "submission.order_reference",
        "order.patient.first": "patient.given_name",
        "order.source": {"const": "portal"},
        "order.lines": {"each": "items", "fields": {"code": "item.ndc", "qty": "item.quantity"}}
      },
      "external_id": "id",                       # where the answer names the vendor's id
      "status": {"method": "GET", "path": "/orders/{external_id}", "field": "state",
                 "map": {"received": "accepted", "filled": "dispensed", "void": "cancelled"}},
      "cancel": {"method": "POST", "path": "/orders/{external_id}/cancel",
                 "not_cancellable": [409]},
      "health": {"method": "GET", "path": "/health"},
      "error_message": "error.message"           # where an error answer holds its message
    }

Sources are dotted paths into the submission: `submission.<field>`, `patient.<field>`,
`prescriber.<field>`, and inside an `each` list `item.<field>`; `{"const": value}` is a
constant. Target paths are dotted; a missing source value is left out (or `null` with
`"keep_null": true` in the mapping).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import (
    NotCancellable,
    PermanentError,
    PharmacyConfig,
    PharmacyPatient,
    PharmacyStatus,
    Prescriber,
    PrescriptionItem,
    Recorder,
    StatusResult,
    Submission,
    SubmitResult,
    TransientError,
)
from connectors.http import HttpTransport, error_for
from connectors.registry import register

_SUBMISSION_FIELDS = frozenset({"id", "order_reference", "authored_on"})
_PATIENT_FIELDS = frozenset({"reference", "given_name", "family_name", "birth_date", "phone"})
_PRESCRIBER_FIELDS = frozenset({"reference", "display"})
_ITEM_FIELDS = frozenset(
    {"identifier", "sku", "display", "rxnorm", "ndc", "quantity", "dosage_text", "validity_days"}
)
_ROOTS: dict[str, frozenset[str]] = {
    "submission": _SUBMISSION_FIELDS,
    "patient": _PATIENT_FIELDS,
    "prescriber": _PRESCRIBER_FIELDS,
    "item": _ITEM_FIELDS,
}


class MappingError(PermanentError):
    """The configured mapping is not usable."""


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _section(mapping: Mapping[str, object], key: str, *, required: bool = True) -> dict[str, Any]:
    value = mapping.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise MappingError(f"the mapping needs an object {key!r}")
    return dict(value)


def _source(path: str, submission: Submission, item: PrescriptionItem | None) -> object:
    root, _, name = path.partition(".")
    allowed = _ROOTS.get(root)
    if allowed is None or name not in allowed:
        raise MappingError(f"unknown source {path!r}")
    if root == "item":
        if item is None:
            raise MappingError(f"{path!r} is only available inside an 'each' list")
        return _plain(getattr(item, name))
    target: object = {
        "submission": submission,
        "patient": submission.patient,
        "prescriber": submission.prescriber,
    }[root]
    return _plain(getattr(target, name))


def _put(document: dict[str, Any], path: str, value: object) -> None:
    parts = path.split(".")
    if not all(parts):
        raise MappingError(f"bad target path {path!r}")
    node = document
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MappingError(f"target path {path!r} crosses a value")
        node = child
    node[parts[-1]] = value


def _get(document: object, path: str) -> object:
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def build_body(
    fields: Mapping[str, object],
    submission: Submission,
    item: PrescriptionItem | None = None,
    *,
    keep_null: bool = False,
) -> dict[str, Any]:
    """The vendor's JSON document from a field mapping (target path <- source)."""
    document: dict[str, Any] = {}
    for target, rule in fields.items():
        value: object
        if isinstance(rule, str):
            value = _source(rule, submission, item)
        elif isinstance(rule, Mapping) and "const" in rule:
            value = rule["const"]
        elif isinstance(rule, Mapping) and rule.get("each") == "items":
            inner = rule.get("fields")
            if not isinstance(inner, Mapping):
                raise MappingError(f"{target!r}: an 'each' list needs 'fields'")
            value = [
                build_body(inner, submission, line, keep_null=keep_null)
                for line in submission.items
            ]
        else:
            raise MappingError(f"{target!r}: a source path, a const or an each-list is expected")
        if value is None and not keep_null:
            continue
        _put(document, target, value)
    return document


class VendorJsonConnector:
    def __init__(self, config: PharmacyConfig, recorder: Recorder) -> None:
        self.config = config
        self.mapping = config.mapping
        self.transport = HttpTransport(config, recorder)

    def payload(self, submission: Submission) -> dict[str, Any]:
        return build_body(
            _section(self.mapping, "body"),
            submission,
            keep_null=bool(self.mapping.get("keep_null", False)),
        )

    def submit(self, submission: Submission) -> SubmitResult:
        endpoint = _section(self.mapping, "submit")
        headers = {
            str(name): str(_source(str(source), submission, None))
            for name, source in dict(endpoint.get("headers") or {}).items()
        }
        response = self._call(endpoint, None, headers, self.payload(submission))
        body = self._answer(response, "submitting the order")
        external = _get(body, str(self.mapping.get("external_id", "id")))
        if external is None or isinstance(external, dict | list):
            raise PermanentError("the vendor's answer names no order id")
        status = self._status_word(body) or PharmacyStatus.ACCEPTED
        return SubmitResult(external_id=str(external), status=status, message=None)

    def fetch_status(self, submission: Submission, external_id: str) -> StatusResult:
        endpoint = _section(self.mapping, "status")
        response = self._call(endpoint, external_id, {}, None)
        body = self._answer(response, "reading the order status")
        status = self._status_word(body)
        if status is None:
            raise PermanentError(
                f"unknown vendor status {_get(body, str(endpoint.get('field')))!r}"
            )
        dispenses: tuple[Mapping[str, object], ...] = ()
        if status == PharmacyStatus.DISPENSED:
            dispenses = ({"external_id": external_id, "status": "completed"},)
        return StatusResult(status=status, dispenses=dispenses, message=None)

    def cancel(self, submission: Submission, external_id: str) -> None:
        endpoint = _section(self.mapping, "cancel")
        response = self._call(endpoint, external_id, {}, None)
        refused = {int(code) for code in endpoint.get("not_cancellable") or [409]}
        if response.status_code in refused:
            raise NotCancellable(self._message(response) or "the vendor refused to cancel")
        self._answer(response, "cancelling the order")

    def healthcheck(self) -> None:
        endpoint = _section(self.mapping, "health")
        self._answer(self._call(endpoint, None, {}, None), "the health check")

    # -- internals ---------------------------------------------------------------------------

    def _call(
        self,
        endpoint: Mapping[str, Any],
        external_id: str | None,
        headers: dict[str, str],
        body: object | None,
    ) -> httpx.Response:
        method = str(endpoint.get("method", "GET")).upper()
        path = str(endpoint.get("path", ""))
        if "{external_id}" in path:
            if external_id is None:
                raise MappingError(f"{path!r} needs an external id")
            path = path.replace("{external_id}", quote(external_id, safe=""))
        headers.setdefault("Accept", "application/json")
        return self.transport.request(method, path, json_body=body, headers=headers)

    def _message(self, response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        message = _get(body, str(self.mapping.get("error_message", "error.message")))
        return str(message)[:500] if message is not None else None

    def _answer(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        if not response.is_success:
            detail = self._message(response)
            message = f"{doing}: HTTP {response.status_code}" + (f": {detail}" if detail else "")
            raise error_for(response, message)
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"{doing}: the vendor's answer is not JSON") from None
        if not isinstance(body, dict):
            raise PermanentError(f"{doing}: the vendor's answer is not an object")
        return body

    def _status_word(self, body: object) -> PharmacyStatus | None:
        status = _section(self.mapping, "status", required=False)
        word = _get(body, str(status.get("field", "status")))
        table = status.get("map") or {}
        target = table.get(word) if isinstance(word, str) else None
        if target is None:
            return None
        try:
            return PharmacyStatus(target)
        except ValueError:
            raise MappingError(f"the status map names {target!r}, not a pharmacy status") from None


def check_mapping(mapping: Mapping[str, object]) -> None:
    """Refuse a mapping that cannot work (for admin APIs before saving it)."""
    for key in ("submit", "body", "status", "cancel", "health"):
        _section(mapping, key)
    sample = Submission(
        id="s",
        order_reference="o",
        patient=_SAMPLE_PATIENT,
        prescriber=_SAMPLE_PRESCRIBER,
        authored_on=datetime(2000, 1, 1, tzinfo=UTC),
        items=(_SAMPLE_ITEM,),
    )
    build_body(_section(mapping, "body"), sample)
    for word, target in dict(_section(mapping, "status").get("map") or {}).items():
        try:
            PharmacyStatus(str(target))
        except ValueError:
            raise MappingError(
                f"status {word!r} maps to {target!r}, not a pharmacy status"
            ) from None
    json.dumps(dict(mapping))


_SAMPLE_PATIENT = PharmacyPatient("p", "g", "f", date(2000, 1, 1), None)
_SAMPLE_PRESCRIBER = Prescriber("r", None)
_SAMPLE_ITEM = PrescriptionItem("i", "s", "d", None, None, 1, "t", 1)

register("vendor_json")(VendorJsonConnector)
