"""`vendor_json`: two vendors, two mappings, one connector - the payload, endpoints and status
words come from configuration."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from connectors.base import Exchange, NotCancellable, PermanentError, PharmacyStatus
from connectors.registry import get_connector
from connectors.vendor_json import MappingError, build_body, check_mapping
from tests.fixtures.pharmacy import ReferencePharmacy, submission

STATUS = {
    "method": "GET",
    "path": "/vendor/orders/{external_id}",
    "field": "state",
    "map": {"received": "accepted", "filled": "dispensed", "cancelled": "cancelled"},
}
CANCEL = {"method": "POST", "path": "/vendor/orders/{external_id}/cancel", "not_cancellable": [409]}
HEALTH = {"method": "GET", "path": "/vendor/health"}

FLAT: dict[str, Any] = {
    "submit": {
        "method": "POST",
        "path": "/vendor/orders",
        "headers": {"Idempotency-Key": "submission.id"},
    },
    "body": {
        "ref": "submission.order_reference",
        "first_name": "patient.given_name",
        "last_name": "patient.family_name",
        "dob": "patient.birth_date",
        "doctor": "prescriber.display",
        "channel": {"const": "web"},
        "lines": {"each": "items", "fields": {"ndc": "item.ndc", "count": "item.quantity"}},
    },
    "external_id": "id",
    "status": STATUS,
    "cancel": CANCEL,
    "health": HEALTH,
    "error_message": "error.message",
}

NESTED: dict[str, Any] = {
    "submit": {
        "method": "POST",
        "path": "/vendor/orders",
        "headers": {"Idempotency-Key": "submission.order_reference"},
    },
    "body": {
        "rx.header.external_ref": "submission.id",
        "rx.header.written": "submission.authored_on",
        "rx.header.version": {"const": 2},
        "rx.member.id": "patient.reference",
        "rx.member.name.given": "patient.given_name",
        "rx.member.name.family": "patient.family_name",
        "rx.member.phone": "patient.phone",
        "rx.drugs": {
            "each": "items",
            "fields": {
                "product.rxcui": "item.rxnorm",
                "product.label": "item.display",
                "sig": "item.dosage_text",
                "qty": "item.quantity",
                "line_id": "item.identifier",
            },
        },
    },
    "external_id": "id",
    "status": STATUS,
    "cancel": CANCEL,
    "health": HEALTH,
}


def sent_body(recorded: list[Exchange]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        next(e.request_body for e in recorded if e.method == "POST") or ""
    )
    return body


def test_two_mappings_give_two_vendor_payloads(reference_pharmacy: ReferencePharmacy) -> None:
    flat: list[Exchange] = []
    nested: list[Exchange] = []
    get_connector(reference_pharmacy.config("vendor_json", mapping=FLAT), flat.append).submit(
        submission(1, items=2)
    )
    get_connector(reference_pharmacy.config("vendor_json", mapping=NESTED), nested.append).submit(
        submission(2)
    )
    assert sent_body(flat) == {
        "ref": "ORD-000001",
        "first_name": "Avery",
        "last_name": "Testperson",
        "dob": "1980-04-02",
        "doctor": "Dr. Sam Example",
        "channel": "web",
        "lines": [{"ndc": "0093-7146-56", "count": 30}, {"ndc": "0093-7146-56", "count": 30}],
    }
    assert sent_body(nested) == {
        "rx": {
            "header": {
                "external_ref": "sub-000002",
                "written": "2026-03-04T10:30:00+00:00",
                "version": 2,
            },
            "member": {
                "id": "pp-000002",
                "name": {"given": "Avery", "family": "Testperson"},
                "phone": "+15550100123",
            },
            "drugs": [
                {
                    "product": {"rxcui": "197361", "label": "Amlodipine 5 mg tablet (1)"},
                    "sig": "Take one tablet by mouth once daily",
                    "qty": 30,
                    "line_id": "item-000002-1",
                }
            ],
        }
    }
    assert flat[0].request_headers["idempotency-key"] == "sub-000001"
    assert nested[0].request_headers["idempotency-key"] == "ORD-000002"
    assert reference_pharmacy.stats()["vendor_orders"] == 2


def test_a_re_sent_order_is_one_order(reference_pharmacy: ReferencePharmacy) -> None:
    conn = get_connector(reference_pharmacy.config("vendor_json", mapping=FLAT), lambda e: None)
    first = conn.submit(submission(3))
    second = conn.submit(submission(3))
    assert first.external_id == second.external_id
    assert first.status == PharmacyStatus.ACCEPTED
    stats = reference_pharmacy.stats()
    assert (stats["vendor_orders"], stats["vendor_duplicates"]) == (1, 1)


def test_status_dispense_and_cancel_follow_the_mapping(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    conn = get_connector(reference_pharmacy.config("vendor_json", mapping=NESTED), lambda e: None)
    conn.healthcheck()
    kept = conn.submit(submission(4))
    dropped = conn.submit(submission(5))
    assert kept.external_id and dropped.external_id
    conn.cancel(submission(5), dropped.external_id)
    assert conn.fetch_status(submission(5), dropped.external_id).status == PharmacyStatus.CANCELLED
    reference_pharmacy.settings(dispense_delay_seconds=0)
    time.sleep(0.05)
    status = conn.fetch_status(submission(4), kept.external_id)
    assert status.status == PharmacyStatus.DISPENSED
    assert len(status.dispenses) == 1
    with pytest.raises(NotCancellable, match="the order was filled"):
        conn.cancel(submission(4), kept.external_id)


def test_a_vendor_refusal_is_permanent_with_its_message(
    reference_pharmacy: ReferencePharmacy,
) -> None:
    mapping = {**FLAT, "submit": {"method": "POST", "path": "/vendor/orders"}}  # no key header
    conn = get_connector(reference_pharmacy.config("vendor_json", mapping=mapping), lambda e: None)
    with pytest.raises(PermanentError, match="HTTP 400: Idempotency-Key is required"):
        conn.submit(submission(6))


def test_bad_mappings_are_refused() -> None:
    check_mapping(FLAT)
    check_mapping(NESTED)
    with pytest.raises(MappingError, match=r"unknown source 'patient\.ssn'"):
        build_body({"x": "patient.ssn"}, submission(1))
    with pytest.raises(MappingError, match=r"unknown source 'submission\.patient'"):
        build_body({"x": "submission.patient"}, submission(1))
    with pytest.raises(MappingError, match="only available inside an 'each' list"):
        build_body({"x": "item.ndc"}, submission(1))
    with pytest.raises(MappingError, match="not a pharmacy status"):
        check_mapping({**FLAT, "status": {**STATUS, "map": {"x": "teleported"}}})
    with pytest.raises(MappingError, match="needs an object 'cancel'"):
        check_mapping({k: v for k, v in FLAT.items() if k != "cancel"})
