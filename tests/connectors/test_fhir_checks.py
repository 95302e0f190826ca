"""The project's own FHIR checks: required bindings fhir.resources leaves unchecked, and the
mapping of OperationOutcome answers to transient or permanent errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connectors.base import PermanentError, TransientError
from connectors.fhir_checks import (
    bundle_problems,
    medication_dispense_problems,
    medication_request_problems,
    operation_outcome,
    outcome_issues,
)
from connectors.fhir_r4 import FhirR4Connector
from tests.fixtures.pharmacy import submission


def request() -> dict[str, Any]:
    from connectors.base import PharmacyConfig

    connector = FhirR4Connector(
        PharmacyConfig(name="x", connector="fhir_r4", base_url="http://127.0.0.1:9"), print
    )
    return connector.medication_request(submission(1), submission(1).items[0])


def test_fhir_resources_alone_accepts_a_bogus_status() -> None:
    from fhir.resources.R4B.medicationrequest import MedicationRequest

    MedicationRequest.model_validate({**request(), "status": "bogus"})  # no error: hence ours


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"status": "bogus"}, "MedicationRequest.status: 'bogus' is not in the required value set"),
        ({"intent": "wish"}, "MedicationRequest.intent: 'wish' is not in the required value set"),
        ({"status": None}, "MedicationRequest.status: required"),
        ({"identifier": None}, "MedicationRequest.identifier: required for de-duplication"),
        ({"subject": None}, "MedicationRequest.subject: required"),
        ({"medicationCodeableConcept": None}, "MedicationRequest.medication[x]: required"),
        ({"dosageInstruction": "daily"}, "MedicationRequest.dosageInstruction"),
    ],
)
def test_medication_request_problems(change: dict[str, Any], problem: str) -> None:
    resource = {k: v for k, v in {**request(), **change}.items() if v is not None}
    assert any(found.startswith(problem) for found in medication_request_problems(resource))


def test_a_contained_patient_phone_system_is_checked() -> None:
    resource = request()
    resource["contained"][0]["telecom"][0]["system"] = "carrier-pigeon"
    assert medication_request_problems(resource) == [
        "MedicationRequest.contained[0].telecom[0].system: 'carrier-pigeon' is not in the"
        " required value set"
    ]


def test_medication_dispense_and_bundle_bindings() -> None:
    dispense = {
        "resourceType": "MedicationDispense",
        "status": "handed-over",
        "medicationCodeableConcept": {"text": "x"},
    }
    assert medication_dispense_problems(dispense) == [
        "MedicationDispense.status: 'handed-over' is not in the required value set"
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "pile",
        "entry": [
            {"resource": request(), "request": {"method": "FETCH", "url": "MedicationRequest"}}
        ],
    }
    problems = bundle_problems(bundle, expected_type="transaction")
    assert "Bundle.type: 'pile' is not in the required value set" in problems
    assert "Bundle.type: 'pile', expected 'transaction'" in problems
    assert "Bundle.entry[0].request.method: 'FETCH' is not in the required value set" in problems


def test_outcome_issues_are_read_safely() -> None:
    body = operation_outcome("business-rule", "too many", expression=["MedicationRequest.x"])
    (issue,) = outcome_issues(body)
    assert str(issue) == "error business-rule at MedicationRequest.x: too many"
    odd = {"resourceType": "OperationOutcome", "issue": [{"severity": "loud", "code": "??"}, 3]}
    assert [str(i) for i in outcome_issues(odd)] == ["error unknown"]
    assert outcome_issues({"resourceType": "Patient"}) == []
    assert outcome_issues("not json") == []


def _answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        request=httpx.Request("POST", "http://127.0.0.1:9/"),
    )


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "invalid", PermanentError),
        (422, "business-rule", PermanentError),
        (409, "conflict", PermanentError),
        (429, "throttled", TransientError),
        (423, "lock-error", TransientError),
        (400, "transient", TransientError),
        (500, "exception", TransientError),
        (503, "invalid", TransientError),
    ],
)
def test_operation_outcomes_map_to_transient_or_permanent(
    status: int, code: str, error: type[Exception]
) -> None:
    from connectors.base import PharmacyConfig

    connector = FhirR4Connector(
        PharmacyConfig(name="x", connector="fhir_r4", base_url="http://127.0.0.1:9"), print
    )
    with pytest.raises(error) as caught:
        connector._answer(_answer(status, operation_outcome(code, "the pharmacy says no")), "doing")
    assert str(caught.value) == f"doing: HTTP {status}: error {code}: the pharmacy says no"
