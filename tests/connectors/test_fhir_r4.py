"""The `fhir_r4` connector against the reference pharmacy over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest

from connectors.base import (
    Exchange,
    NotCancellable,
    PermanentError,
    PharmacyStatus,
    TransientError,
)
from connectors.fhir_checks import bundle_problems, medication_request_problems
from connectors.fhir_r4 import FhirR4Connector
from connectors.registry import get_connector
from tests.fixtures.pharmacy import ReferencePharmacy, submission

GOLDEN = Path(__file__).with_name("golden_bundle.json")


def connector(
    pharmacy: ReferencePharmacy, recorded: list[Exchange], **changes: Any
) -> FhirR4Connector:
    built = get_connector(pharmacy.config(**changes), recorded.append)
    assert isinstance(built, FhirR4Connector)
    return built


def test_the_bundle_is_the_golden_one(reference_pharmacy: ReferencePharmacy) -> None:
    bundle = connector(reference_pharmacy, []).transaction_bundle(submission(1, items=2))
    assert bundle == json.loads(GOLDEN.read_text())


def test_every_emitted_request_parses_and_passes_the_value_set_checks(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    bundle = connector(reference_pharmacy, []).transaction_bundle(submission(7, items=3))
    Bundle.model_validate(bundle)
    assert bundle_problems(bundle, expected_type="transaction") == []
    for entry in bundle["entry"]:
        MedicationRequest.model_validate(entry["resource"])
        assert medication_request_problems(entry["resource"]) == []
        assert entry["resource"]["status"] == "active"
        assert entry["resource"]["intent"] == "order"
        assert entry["request"]["method"] == "POST"


def test_only_the_allow_listed_patient_fields_are_sent(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    recorded: list[Exchange] = []
    sent = submission(3)
    connector(reference_pharmacy, recorded).submit(sent)
    posted = json.loads(next(e.request_body for e in recorded if e.method == "POST") or "")
    resource = posted["entry"][0]["resource"]
    (patient,) = resource["contained"]
    assert set(patient) == {"resourceType", "id", "identifier", "name", "telecom", "birthDate"}
    assert patient["identifier"][0]["value"] == sent.patient.reference
    assert patient["name"] == [{"family": "Testperson", "given": ["Avery"]}]
    # Nothing else of the patient anywhere in the request: the allow-listed values occur only
    # inside the contained Patient.
    outside = json.dumps({k: v for k, v in resource.items() if k != "contained"})
    for value in ("Avery", "Testperson", "1980-04-02", "+15550100123", "pp-000003"):
        assert value not in outside


def test_a_re_sent_submission_is_accepted_once(reference_pharmacy: ReferencePharmacy) -> None:
    conn = connector(reference_pharmacy, [])
    first = conn.submit(submission(5, items=2))
    second = conn.submit(submission(5, items=2))
    assert first.status == second.status == PharmacyStatus.ACCEPTED
    assert first.external_id == second.external_id
    stats = reference_pharmacy.stats()
    assert stats["distinct_requests"] == 2
    assert stats["duplicates"] == 2


def test_a_business_rule_refusal_is_permanent_with_the_pharmacys_message(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    with pytest.raises(PermanentError) as caught:
        connector(reference_pharmacy, []).submit(submission(9, quantity=5000))
    assert "HTTP 422" in caught.value.message
    assert "business-rule" in caught.value.message
    assert "exceeds the pharmacy's limit of 1000" in caught.value.message
    assert reference_pharmacy.stats()["distinct_requests"] == 0


def test_an_invalid_code_is_permanent(reference_pharmacy: ReferencePharmacy) -> None:
    with pytest.raises(PermanentError, match=r"code-invalid.*unknown NDC code 'not-an-ndc'"):
        connector(reference_pharmacy, []).submit(submission(10, ndc="not-an-ndc"))


def test_a_bundle_with_a_bad_status_is_never_sent(reference_pharmacy: ReferencePharmacy) -> None:
    recorded: list[Exchange] = []
    conn = connector(reference_pharmacy, recorded)
    bundle = conn.transaction_bundle(submission(11))
    bundle["entry"][0]["resource"]["status"] = "bogus"
    assert any("bogus" in problem for problem in bundle_problems(bundle))
    # The server's own check refuses it too, with an OperationOutcome.
    response = reference_pharmacy.http.post("/", json=bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"
    assert "'bogus' is not in the required value set" in response.json()["issue"][0]["diagnostics"]


def test_server_errors_are_transient(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.faults(error_rate=1.0)
    recorded: list[Exchange] = []
    with pytest.raises(TransientError, match=r"HTTP 50[023].*transient"):
        connector(reference_pharmacy, recorded).submit(submission(12))
    assert recorded[-1].status_code in (500, 502, 503)


def test_timeouts_are_transient_and_recorded(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.faults(timeout_rate=1.0, timeout_seconds=3)
    recorded: list[Exchange] = []
    with pytest.raises(TransientError, match="timed out"):
        connector(reference_pharmacy, recorded, timeout_seconds=0.5).submit(submission(13))
    assert recorded[-1].status_code is None
    assert recorded[-1].error is not None and "timeout" in recorded[-1].error


def test_a_pharmacy_that_is_down_is_transient(reference_pharmacy: ReferencePharmacy) -> None:
    reference_pharmacy.faults(down=True)
    with pytest.raises(TransientError):
        connector(reference_pharmacy, []).healthcheck()


def test_a_closed_port_is_transient(reference_pharmacy: ReferencePharmacy) -> None:
    from tests.fixtures.live_api import free_port

    recorded: list[Exchange] = []
    conn = connector(reference_pharmacy, recorded, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="failed"):
        conn.submit(submission(14))
    assert recorded[0].status_code is None and recorded[0].error


def test_healthcheck_reads_the_capability_statement(reference_pharmacy: ReferencePharmacy) -> None:
    recorded: list[Exchange] = []
    connector(reference_pharmacy, recorded).healthcheck()
    assert [(e.method, e.url.rsplit("/", 1)[-1], e.status_code) for e in recorded] == [
        ("GET", "metadata", 200)
    ]


def test_dispensed_requests_are_read_back_and_cannot_be_cancelled(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    reference_pharmacy.settings(dispense_delay_seconds=0.5)
    conn = connector(reference_pharmacy, [])
    sent = submission(15, items=2)
    result = conn.submit(sent)
    assert result.external_id
    assert conn.fetch_status(sent, result.external_id).status == PharmacyStatus.ACCEPTED
    time.sleep(0.7)
    status = conn.fetch_status(sent, result.external_id)
    assert status.status == PharmacyStatus.DISPENSED
    assert len(status.dispenses) == 2
    assert {d["status"] for d in status.dispenses} == {"completed"}
    assert conn.submit(sent).status == PharmacyStatus.DISPENSED
    with pytest.raises(NotCancellable):
        conn.cancel(sent, result.external_id)
    assert reference_pharmacy.stats()["cancelled"] == 0


def test_a_request_is_cancelled_before_it_is_dispensed(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    conn = connector(reference_pharmacy, [])
    sent = submission(16, items=2)
    result = conn.submit(sent)
    assert result.external_id
    conn.cancel(sent, result.external_id)
    conn.cancel(sent, result.external_id)  # twice is harmless
    assert conn.fetch_status(sent, result.external_id).status == PharmacyStatus.CANCELLED
    assert conn.submit(sent).status == PharmacyStatus.CANCELLED  # a late re-send changes nothing
    assert reference_pharmacy.stats()["cancelled"] == 2
    # The pharmacy refuses itself too, once dispensed (409 with an OperationOutcome).
    reference_pharmacy.settings(dispense_delay_seconds=0)
    other = conn.submit(submission(17))
    assert other.external_id
    resource = reference_pharmacy.http.get(f"/MedicationRequest/{other.external_id}").json()
    resource["status"] = "cancelled"
    refused = reference_pharmacy.http.put(f"/MedicationRequest/{other.external_id}", json=resource)
    assert refused.status_code == 409
    assert refused.json()["issue"][0]["code"] == "business-rule"


def test_an_unknown_external_id_is_permanent(reference_pharmacy: ReferencePharmacy) -> None:
    with pytest.raises(PermanentError, match="does not know"):
        connector(reference_pharmacy, []).fetch_status(submission(18), "nosuchid")
    with pytest.raises(PermanentError, match="not a MedicationRequest id"):
        connector(reference_pharmacy, []).fetch_status(submission(18), "../x?y")


def test_the_reference_pharmacy_refuses_what_is_not_a_transaction(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    http = reference_pharmacy.http
    not_json = http.post("/", content=b"{", headers={"Content-Type": "application/fhir+json"})
    assert not_json.status_code == 400
    assert not_json.json()["issue"][0]["code"] == "structure"
    batch = http.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": []})
    assert batch.status_code == 400
    assert batch.json()["issue"][0]["expression"] == ["Bundle.type"]
    bundle = connector(reference_pharmacy, []).transaction_bundle(submission(20))
    del bundle["entry"][0]["request"]["ifNoneExist"]
    unconditional = http.post("/", json=bundle)
    assert unconditional.status_code == 422
    assert "ifNoneExist" in unconditional.json()["issue"][0]["diagnostics"]
    assert http.post("/_control/faults", content=b"[").status_code == 400
    assert http.post("/_control/faults", json={"error_rate": 2}).status_code == 400
    assert http.post("/_control/settings", json={"oauth_clients": [1]}).status_code == 400
    assert reference_pharmacy.stats()["distinct_requests"] == 0
