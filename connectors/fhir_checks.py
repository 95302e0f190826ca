"""FHIR R4 checks of the project's own: the required code bindings fhir.resources does not
check, structure through the R4B models (which match R4 for these resources), and the reading
of OperationOutcome answers. Shared by the `fhir_r4` connector and the reference pharmacy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

# Required bindings (FHIR R4 4.0.1 value sets).
MEDICATION_REQUEST_STATUS = frozenset(
    {
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    }
)
MEDICATION_REQUEST_INTENT = frozenset(
    {
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)
MEDICATION_DISPENSE_STATUS = frozenset(
    {
        "preparation",
        "in-progress",
        "cancelled",
        "on-hold",
        "completed",
        "entered-in-error",
        "stopped",
        "declined",
        "unknown",
    }
)
BUNDLE_TYPE = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)
HTTP_VERB = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
CONTACT_POINT_SYSTEM = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
ISSUE_SEVERITY = frozenset({"fatal", "error", "warning", "information"})
ISSUE_TYPE = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)
# Issue types after which the same request may succeed later.
TRANSIENT_ISSUE_TYPES = frozenset({"transient", "lock-error", "no-store", "timeout", "throttled"})

RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC_SYSTEM = "http://hl7.org/fhir/sid/ndc"


def _check_code(problems: list[str], where: str, value: object, allowed: frozenset[str]) -> None:
    if value is None:
        return
    if not isinstance(value, str) or value not in allowed:
        problems.append(f"{where}: {value!r} is not in the required value set")


def _model_problems(resource_type: str, resource: Mapping[str, Any]) -> list[str]:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return [f"unknown resourceType {resource_type!r}"]
    try:
        model.model_validate(dict(resource))
    except ValidationError as error:
        return [
            f"{resource_type}.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        ]
    return []


def _contained_problems(resource: Mapping[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for index, contained in enumerate(resource.get("contained") or []):
        if isinstance(contained, Mapping) and contained.get("resourceType") == "Patient":
            for number, telecom in enumerate(contained.get("telecom") or []):
                if isinstance(telecom, Mapping):
                    _check_code(
                        problems,
                        f"{where}.contained[{index}].telecom[{number}].system",
                        telecom.get("system"),
                        CONTACT_POINT_SYSTEM,
                    )
    return problems


def medication_request_problems(resource: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a MedicationRequest: structure, required bindings, and what the
    project requires of each one (status, intent, a medication, a subject, an identifier)."""
    if resource.get("resourceType") != "MedicationRequest":
        return [f"resourceType {resource.get('resourceType')!r} is not MedicationRequest"]
    problems = _model_problems("MedicationRequest", resource)
    if resource.get("status") is None:
        problems.append("MedicationRequest.status: required")
    if resource.get("intent") is None:
        problems.append("MedicationRequest.intent: required")
    _check_code(
        problems, "MedicationRequest.status", resource.get("status"), MEDICATION_REQUEST_STATUS
    )
    _check_code(
        problems, "MedicationRequest.intent", resource.get("intent"), MEDICATION_REQUEST_INTENT
    )
    if not resource.get("medicationCodeableConcept") and not resource.get("medicationReference"):
        problems.append("MedicationRequest.medication[x]: required")
    if not resource.get("subject"):
        problems.append("MedicationRequest.subject: required")
    if not resource.get("identifier"):
        problems.append("MedicationRequest.identifier: required for de-duplication")
    problems += _contained_problems(resource, "MedicationRequest")
    return problems


def medication_dispense_problems(resource: Mapping[str, Any]) -> list[str]:
    if resource.get("resourceType") != "MedicationDispense":
        return [f"resourceType {resource.get('resourceType')!r} is not MedicationDispense"]
    problems = _model_problems("MedicationDispense", resource)
    if resource.get("status") is None:
        problems.append("MedicationDispense.status: required")
    _check_code(
        problems, "MedicationDispense.status", resource.get("status"), MEDICATION_DISPENSE_STATUS
    )
    return problems


def bundle_problems(bundle: Mapping[str, Any], *, expected_type: str | None = None) -> list[str]:
    """The Bundle's own structure and bindings (type, entry.request.method) and every
    MedicationRequest and MedicationDispense it holds."""
    if bundle.get("resourceType") != "Bundle":
        return [f"resourceType {bundle.get('resourceType')!r} is not Bundle"]
    problems = _model_problems("Bundle", bundle)
    _check_code(problems, "Bundle.type", bundle.get("type"), BUNDLE_TYPE)
    if expected_type is not None and bundle.get("type") != expected_type:
        problems.append(f"Bundle.type: {bundle.get('type')!r}, expected {expected_type!r}")
    entries = bundle.get("entry") or []
    for index, entry in enumerate(entries if isinstance(entries, Sequence) else []):
        if not isinstance(entry, Mapping):
            continue
        request = entry.get("request")
        if isinstance(request, Mapping):
            _check_code(
                problems, f"Bundle.entry[{index}].request.method", request.get("method"), HTTP_VERB
            )
        resource = entry.get("resource")
        if isinstance(resource, Mapping):
            kind = resource.get("resourceType")
            found: list[str] = []
            if kind == "MedicationRequest":
                found = medication_request_problems(resource)
            elif kind == "MedicationDispense":
                found = medication_dispense_problems(resource)
            problems += [f"Bundle.entry[{index}].resource: {problem}" for problem in found]
    return problems


@dataclass(frozen=True)
class Issue:
    severity: str
    code: str
    diagnostics: str | None
    expression: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" at {', '.join(self.expression)}" if self.expression else ""
        text = f": {self.diagnostics}" if self.diagnostics else ""
        return f"{self.severity} {self.code}{where}{text}"


def outcome_issues(body: object) -> list[Issue]:
    """The issues of an OperationOutcome (an empty list when `body` is none)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return []
    issues: list[Issue] = []
    for raw in body.get("issue") or []:
        if not isinstance(raw, Mapping):
            continue
        severity = raw.get("severity")
        code = raw.get("code")
        details = raw.get("details")
        diagnostics = raw.get("diagnostics")
        if diagnostics is None and isinstance(details, Mapping):
            diagnostics = details.get("text")
        expression = raw.get("expression") or raw.get("location") or []
        issues.append(
            Issue(
                severity=severity if severity in ISSUE_SEVERITY else "error",
                code=code if code in ISSUE_TYPE else "unknown",
                diagnostics=str(diagnostics)[:500] if diagnostics is not None else None,
                expression=tuple(str(item) for item in expression)[:5],
            )
        )
    return issues


def operation_outcome(
    code: str, diagnostics: str, *, severity: str = "error", expression: Sequence[str] = ()
) -> dict[str, Any]:
    """An OperationOutcome with one issue (for servers and tests)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}
