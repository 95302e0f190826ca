"""What the log filter removes, and what it keeps so that logs stay useful."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date

import pytest
from pydantic import ValidationError

from app.logs import RedactingFilter, redact, redact_path
from app.patients.schemas import PatientCreate

PERSON = {
    "name": "Zebulon Quixote",
    "email": "zebulon.quixote@example.com",
    "phone": "+1 555 0177",
    "date_of_birth": "1961-02-03",
}
VALUES = ["Zebulon", "Quixote", "zebulon.quixote", "555 0177", "1961-02-03", "1961, 2, 3"]


def _clean(text: str) -> bool:
    return not [value for value in VALUES if value in text]


@pytest.mark.parametrize(
    "text",
    [
        repr(PERSON),
        json.dumps(PERSON),
        json.dumps(PERSON, indent=2),
        "name=Zebulon Quixote email=zebulon.quixote@example.com phone=+1 555 0177",
        "PatientCreate(name='Zebulon Quixote', date_of_birth=datetime.date(1961, 2, 3))",
        "recipient_email: zebulon.quixote@example.com",
        "refused <zebulon.quixote@example.com>: mailbox unavailable",
        "GET /api/v1/patients?email=zebulon.quixote%40example.com",
        repr(
            {
                "billing_details": {
                    "address": {"city": "Quixote Town", "line1": "1 Zebulon Way"},
                    "email": PERSON["email"],
                    "name": PERSON["name"],
                    "phone": PERSON["phone"],
                }
            }
        ),
    ],
)
def test_redact_removes_the_values_of_phi_fields(text: str) -> None:
    assert _clean(redact(text)), redact(text)


def test_a_validation_error_keeps_its_field_and_reason_but_not_the_input() -> None:
    with pytest.raises(ValidationError) as refused:
        PatientCreate.model_validate({**PERSON, "date_of_birth": date(2961, 2, 3)})
    text = redact(str(refused.value))
    assert "2961" not in text and "date_of_birth must be a past date" in text
    assert "input_value=[redacted], input_type=date" in text


def test_code_and_ordinary_messages_are_kept() -> None:
    for text in (
        "    PatientCreate(name=data.name, email=data.email, phone=data.phone)",
        "outbox: 3 delivered, 0 to retry, 0 dead-lettered",
        'File "/srv/app/patients/service.py", line 42, in create_patient',
        "email_hash=4f2a9c lookup took 3 ms",
    ):
        assert redact(text) == text


def test_access_log_paths_lose_query_strings_and_checkout_tokens() -> None:
    assert redact_path("/api/v1/patients?email=zebulon%40example.com") == "/api/v1/patients"
    assert redact_path("/pay/Zq3Xb-token-value") == "/pay/[redacted]"
    assert redact_path("/pay/verify") == "/pay/verify"
    assert redact_path("/my-orders/Zq3Xb-token-value") == "/my-orders/[redacted]"
    assert redact_path("/my-orders/list") == "/my-orders/list"


def test_the_filter_rewrites_messages_tracebacks_and_access_records() -> None:
    try:
        raise RuntimeError(f"could not match {PERSON!r}")
    except RuntimeError:
        failure = logging.LogRecord("app", logging.ERROR, __file__, 1, "for %s", (PERSON,), None)
        failure.exc_info = sys.exc_info()
    assert RedactingFilter().filter(failure)
    text = logging.Formatter().format(failure)
    assert _clean(text) and "RuntimeError: could not match" in text and "Traceback" in text

    target = "/api/v1/patients?email=zebulon.quixote%40example.com"
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", target, "1.1", 401),
        None,
    )
    assert RedactingFilter().filter(access)
    assert access.getMessage() == '127.0.0.1:5000 - "GET /api/v1/patients HTTP/1.1" 401'
