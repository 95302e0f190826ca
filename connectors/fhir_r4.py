"""The FHIR R4 connector (`fhir_r4`): each prescription item becomes a MedicationRequest, the
submission one transaction Bundle with conditional creates, so that a re-sent submission finds
the requests the pharmacy already holds instead of creating second ones.

Resources are built with the fhir.resources R4B models (identical to R4 for MedicationRequest
and MedicationDispense) and emitted as R4 JSON; the required bindings are checked by
`connectors.fhir_checks` before sending and on every answer.

Optional `mapping` keys (strings): `identifier_system` (MedicationRequest.identifier),
`group_identifier_system` (the submission), `patient_identifier_system`,
`prescriber_identifier_system`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest

from connectors.base import (
    ConnectorError,
    NotCancellable,
    PermanentError,
    PharmacyConfig,
    PharmacyStatus,
    PrescriptionItem,
    Recorder,
    StatusResult,
    Submission,
    SubmitResult,
    TransientError,
)
from connectors.fhir_checks import (
    NDC_SYSTEM,
    RXNORM_SYSTEM,
    TRANSIENT_ISSUE_TYPES,
    bundle_problems,
    medication_dispense_problems,
    medication_request_problems,
    outcome_issues,
)
from connectors.http import HttpTransport, error_for
from connectors.registry import register

DEFAULT_IDENTIFIER_SYSTEM = "urn:medical-ordering-portal:prescription-item"
DEFAULT_GROUP_IDENTIFIER_SYSTEM = "urn:medical-ordering-portal:pharmacy-submission"
DEFAULT_PATIENT_IDENTIFIER_SYSTEM = "urn:medical-ordering-portal:pharmacy-patient"
DEFAULT_PRESCRIBER_IDENTIFIER_SYSTEM = "urn:medical-ordering-portal:prescriber"
FHIR_JSON = "application/fhir+json"
_PATIENT_ID = "patient"
# MedicationRequest.status values after which the pharmacy will not dispense.
_REFUSED_STATUSES = frozenset({"stopped", "entered-in-error"})


def _setting(config: PharmacyConfig, key: str, default: str) -> str:
    value = config.mapping.get(key)
    return value if isinstance(value, str) and value else default


class FhirR4Connector:
    def __init__(self, config: PharmacyConfig, recorder: Recorder) -> None:
        self.config = config
        self.transport = HttpTransport(config, recorder)
        self.identifier_system = _setting(config, "identifier_system", DEFAULT_IDENTIFIER_SYSTEM)
        self.group_system = _setting(
            config, "group_identifier_system", DEFAULT_GROUP_IDENTIFIER_SYSTEM
        )
        self.patient_system = _setting(
            config, "patient_identifier_system", DEFAULT_PATIENT_IDENTIFIER_SYSTEM
        )
        self.prescriber_system = _setting(
            config, "prescriber_identifier_system", DEFAULT_PRESCRIBER_IDENTIFIER_SYSTEM
        )

    # -- building --------------------------------------------------------------------------

    def patient_resource(self, submission: Submission) -> dict[str, Any]:
        """The contained Patient: the allow-listed fields only."""
        patient = submission.patient
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": _PATIENT_ID,
            "identifier": [{"system": self.patient_system, "value": patient.reference}],
            "name": [{"family": patient.family_name, "given": [patient.given_name]}],
            "birthDate": patient.birth_date.isoformat(),
        }
        if patient.phone:
            resource["telecom"] = [{"system": "phone", "value": patient.phone}]
        return resource

    def medication_request(self, submission: Submission, item: PrescriptionItem) -> dict[str, Any]:
        codings = []
        if item.rxnorm:
            codings.append({"system": RXNORM_SYSTEM, "code": item.rxnorm, "display": item.display})
        if item.ndc:
            codings.append({"system": NDC_SYSTEM, "code": item.ndc, "display": item.display})
        medication: dict[str, Any] = {"text": item.display}
        if codings:
            medication["coding"] = codings
        prescriber = submission.prescriber
        requester: dict[str, Any] = {
            "type": "Practitioner",
            "identifier": {"system": self.prescriber_system, "value": prescriber.reference},
        }
        if prescriber.display:
            requester["display"] = prescriber.display
        start = submission.authored_on.date()
        raw = {
            "resourceType": "MedicationRequest",
            "contained": [self.patient_resource(submission)],
            "identifier": [{"system": self.identifier_system, "value": item.identifier}],
            "groupIdentifier": {"system": self.group_system, "value": submission.id},
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": medication,
            "subject": {"reference": f"#{_PATIENT_ID}", "type": "Patient"},
            "authoredOn": submission.authored_on.isoformat(),
            "requester": requester,
            "dosageInstruction": [{"text": item.dosage_text}],
            "dispenseRequest": {
                "validityPeriod": {
                    "start": start.isoformat(),
                    "end": (start + timedelta(days=item.validity_days)).isoformat(),
                },
                "quantity": {"value": item.quantity},
            },
        }
        model = MedicationRequest.model_validate(raw)
        resource: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True))
        return resource

    def transaction_bundle(self, submission: Submission) -> dict[str, Any]:
        """The whole submission: one conditional create per item, checked before sending."""
        if not submission.items:
            raise PermanentError("a submission without prescription items cannot be sent")
        entries = []
        for item in submission.items:
            resource = self.medication_request(submission, item)
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{_urn_uuid(self.identifier_system, item.identifier)}",
                    "resource": resource,
                    "request": {
                        "method": "POST",
                        "url": "MedicationRequest",
                        "ifNoneExist": f"identifier={self.identifier_system}|{item.identifier}",
                    },
                }
            )
        model = Bundle.model_validate(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
        bundle: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True))
        problems = bundle_problems(bundle, expected_type="transaction")
        if problems:
            raise PermanentError("the Bundle is not valid FHIR R4: " + "; ".join(problems[:5]))
        return bundle

    # -- the Connector protocol ------------------------------------------------------------

    def submit(self, submission: Submission) -> SubmitResult:
        bundle = self.transaction_bundle(submission)
        response = self.transport.request(
            "POST",
            "",
            content=json.dumps(bundle, separators=(",", ":")).encode(),
            headers={
                "Content-Type": FHIR_JSON,
                "Accept": FHIR_JSON,
                "Prefer": "return=representation",
            },
        )
        body = self._answer(response, "submitting the Bundle")
        problems = bundle_problems(body, expected_type="transaction-response")
        if problems:
            raise PermanentError("the pharmacy's answer is not valid: " + "; ".join(problems[:5]))
        entries = body.get("entry") or []
        if len(entries) != len(submission.items):
            raise PermanentError(
                f"the pharmacy answered {len(entries)} entries for {len(submission.items)} requests"
            )
        ids: list[str] = []
        statuses: list[str] = []
        for entry in entries:
            answer = entry.get("response") or {}
            code = str(answer.get("status", "")).split(" ", 1)[0]
            if code not in ("200", "201"):
                raise PermanentError(f"the pharmacy refused an entry: {answer.get('status')}")
            location = str(answer.get("location") or "")
            resource = entry.get("resource") or {}
            resource_id = resource.get("id") or _id_from_location(location)
            if not resource_id:
                raise PermanentError("the pharmacy's answer names no MedicationRequest id")
            ids.append(str(resource_id))
            statuses.append(str(resource.get("status") or "active"))
        # A re-sent submission answers what the pharmacy holds, which may have moved on.
        status = PharmacyStatus.ACCEPTED
        if all(value in _REFUSED_STATUSES for value in statuses):
            status = PharmacyStatus.REJECTED
        elif all(value == "cancelled" for value in statuses):
            status = PharmacyStatus.CANCELLED
        elif all(value == "completed" for value in statuses):
            status = PharmacyStatus.DISPENSED
        return SubmitResult(external_id=",".join(ids), status=status, message=None)

    def fetch_status(self, submission: Submission, external_id: str) -> StatusResult:
        ids = _ids(external_id)
        requests = self._search("MedicationRequest", {"_id": ",".join(ids)})
        by_id = {str(resource.get("id")): resource for resource in requests}
        missing = [value for value in ids if value not in by_id]
        if missing:
            raise PermanentError(f"the pharmacy does not know MedicationRequest {missing[0]}")
        for resource in requests:
            problems = medication_request_problems(resource)
            if problems:
                raise PermanentError(
                    "the pharmacy's MedicationRequest is not valid: " + problems[0]
                )
        prescriptions = ",".join(f"MedicationRequest/{value}" for value in ids)
        dispenses = self._search("MedicationDispense", {"prescription": prescriptions})
        for dispense in dispenses:
            problems = medication_dispense_problems(dispense)
            if problems:
                raise PermanentError(
                    "the pharmacy's MedicationDispense is not valid: " + problems[0]
                )
        return _status_of([by_id[value] for value in ids], dispenses)

    def cancel(self, submission: Submission, external_id: str) -> None:
        """Set every request's status to `cancelled`; refused once anything was dispensed."""
        current = self.fetch_status(submission, external_id)
        if current.status == PharmacyStatus.DISPENSED or current.dispenses:
            raise NotCancellable("the pharmacy has already dispensed this prescription")
        for resource_id in _ids(external_id):
            response = self.transport.request(
                "GET", f"MedicationRequest/{resource_id}", headers={"Accept": FHIR_JSON}
            )
            resource = self._answer(response, "reading the MedicationRequest")
            if resource.get("status") == "cancelled":
                continue
            if resource.get("status") == "completed":
                raise NotCancellable("the pharmacy has already completed this prescription")
            resource["status"] = "cancelled"
            problems = medication_request_problems(resource)
            if problems:
                raise PermanentError("the cancelled MedicationRequest is not valid: " + problems[0])
            response = self.transport.request(
                "PUT",
                f"MedicationRequest/{resource_id}",
                content=json.dumps(resource, separators=(",", ":")).encode(),
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            )
            if response.status_code in (409, 422):
                issues = outcome_issues(_json_or_none(response))
                if any(issue.code in ("business-rule", "conflict") for issue in issues):
                    raise NotCancellable(
                        "the pharmacy refused to cancel: " + "; ".join(map(str, issues))
                    )
            self._answer(response, "cancelling the MedicationRequest")

    def healthcheck(self) -> None:
        response = self.transport.request("GET", "metadata", headers={"Accept": FHIR_JSON})
        body = self._answer(response, "reading the CapabilityStatement")
        if body.get("resourceType") != "CapabilityStatement":
            raise PermanentError("GET /metadata did not answer a CapabilityStatement")
        if not str(body.get("fhirVersion", "")).startswith("4.0"):
            raise PermanentError(f"the server speaks FHIR {body.get('fhirVersion')}, not R4")

    # -- internals ---------------------------------------------------------------------------

    def _search(self, resource_type: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        response = self.transport.request(
            "GET", resource_type, params=params, headers={"Accept": FHIR_JSON}
        )
        body = self._answer(response, f"searching {resource_type}")
        problems = bundle_problems(body, expected_type="searchset")
        if problems:
            raise PermanentError("the pharmacy's search answer is not valid: " + problems[0])
        found = []
        for entry in body.get("entry") or []:
            resource = entry.get("resource")
            if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                found.append(resource)
        return found

    def _answer(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        """The JSON body of a successful answer; an error mapped from the OperationOutcome
        (or the status) otherwise."""
        body = _json_or_none(response)
        if response.is_success:
            if not isinstance(body, dict):
                raise TransientError(f"{doing}: the pharmacy's answer is not JSON")
            return body
        raise _error_from_outcome(response, body, doing)


def _error_from_outcome(response: httpx.Response, body: object, doing: str) -> ConnectorError:
    issues = [issue for issue in outcome_issues(body) if issue.severity in ("fatal", "error")]
    issues = issues or outcome_issues(body)
    summary = "; ".join(str(issue) for issue in issues)
    message = f"{doing}: HTTP {response.status_code}" + (f": {summary}" if summary else "")
    if response.status_code < 500 and any(issue.code in TRANSIENT_ISSUE_TYPES for issue in issues):
        return TransientError(message)
    return error_for(response, message)


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _ids(external_id: str) -> list[str]:
    ids = [value.strip() for value in external_id.split(",") if value.strip()]
    if not ids or any(not value.replace("-", "").replace(".", "").isalnum() for value in ids):
        raise PermanentError(f"not a MedicationRequest id list: {external_id!r}")
    return ids


def _id_from_location(location: str) -> str | None:
    parts = location.split("/")
    if len(parts) >= 2 and "MedicationRequest" in parts:
        return parts[parts.index("MedicationRequest") + 1] or None
    return None


def _urn_uuid(system: str, value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{system}|{value}"))


def _status_of(requests: list[dict[str, Any]], dispenses: list[dict[str, Any]]) -> StatusResult:
    completed_for = set()
    for dispense in dispenses:
        if dispense.get("status") == "completed":
            for prescription in dispense.get("authorizingPrescription") or []:
                completed_for.add(str(prescription.get("reference", "")).rsplit("/", 1)[-1])
    statuses = [str(resource.get("status")) for resource in requests]
    ids = [str(resource.get("id")) for resource in requests]
    summary = tuple(
        {
            "id": dispense.get("id"),
            "status": dispense.get("status"),
            "prescription": [
                prescription.get("reference")
                for prescription in dispense.get("authorizingPrescription") or []
            ],
            "quantity": (dispense.get("quantity") or {}).get("value"),
            "whenHandedOver": dispense.get("whenHandedOver"),
        }
        for dispense in dispenses
    )
    if all(value == "cancelled" for value in statuses):
        return StatusResult(PharmacyStatus.CANCELLED, summary, None)
    if all(
        resource_id in completed_for or status == "completed"
        for resource_id, status in zip(ids, statuses, strict=True)
    ):
        return StatusResult(PharmacyStatus.DISPENSED, summary, None)
    if any(value in _REFUSED_STATUSES for value in statuses):
        return StatusResult(
            PharmacyStatus.REJECTED, summary, "the pharmacy stopped the prescription"
        )
    done = sum(1 for resource_id in ids if resource_id in completed_for)
    message = f"{done} of {len(ids)} items dispensed" if done else None
    return StatusResult(PharmacyStatus.ACCEPTED, summary, message)


register("fhir_r4")(FhirR4Connector)
