"""The OpenAPI document tells the truth: schemathesis fuzzes every operation against it.

Run as an admin, as a doctor and anonymously, with all of schemathesis's checks (server errors,
undocumented status codes and content types, response schemas and headers, schema-valid
requests refused, schema-invalid requests accepted, auth ignored, unsupported methods, and the
stateful checks such as use-after-free) and its phases (coverage, fuzzing, stateful), a bounded
number of examples per operation and a fixed seed. Each run works in the test's own transaction
(the `app` fixture), rolled back afterwards, so nothing it creates survives it.

The Stripe webhook is left out: it authenticates by a signature over the raw body, which a
generated request cannot carry (tests/payments/test_webhook.py covers it). The app talks to the
local Stripe stand-in, as in development: a generated reconciliation period is read from it
(without it, Stripe is unreachable here and the answer a 502).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

from tests.fixtures.identity import Auth
from tests.fixtures.stripe import LocalStripe, app_pointed_at

WEBHOOK = "/api/v1/payments/webhook"
MAX_EXAMPLES = 20
SEED = 20240917


@dataclass
class Totals:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _cursor_operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A `cursor` is valid only as a `next_cursor` the API issued (documented on the parameter
    and as 400 `/problems/invalid-cursor`), which no JSON schema can express: for the list
    operations that take one, the schema-valid-request check also accepts that 400. Every other
    answer still has to be a success, and every other check is unchanged."""
    operations = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            if "cursor" in names:
                operations.append(
                    {
                        "include-path": path,
                        "include-method": method.upper(),
                        "checks": {
                            "positive_data_acceptance": {
                                "expected-statuses": [
                                    "2xx",
                                    "3xx",
                                    400,
                                    401,
                                    403,
                                    404,
                                    409,
                                    429,
                                    "5xx",
                                ]
                            }
                        },
                    }
                )
    return operations


# A pharmacy's `mapping` is free-form JSON for its connector, kept in a jsonb column, which
# cannot store U+0000 or an unpaired surrogate anywhere in it; no JSON schema can say "no such
# character at any depth". The API refuses such a mapping with a 422 naming the field: for the
# two operations that take one, the schema-valid-request check also accepts that 422. Every
# other check is unchanged.
FREE_FORM_JSON_OPERATIONS = [
    ("/api/v1/pharmacies", "POST"),
    ("/api/v1/pharmacies/{pharmacy_id}", "PATCH"),
]


def _free_form_json_operations() -> list[dict[str, Any]]:
    return [
        {
            "include-path": path,
            "include-method": method,
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]
                }
            },
        }
        for path, method in FREE_FORM_JSON_OPERATIONS
    ]


def run_schemathesis(app: Any, headers: dict[str, str]) -> Totals:
    document = app.openapi()
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Nothing kept between runs: no `.schemathesis/` folder in the working tree.
            "cache": {"enabled": False},
            # The app shares one database session (the test's transaction): one request at a time.
            "workers": 1,
            "headers": headers,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "checks": {"enabled": True},
            "operations": _cursor_operations(document) + _free_form_json_operations(),
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config).exclude(
        path=WEBHOOK
    )
    statistic = Statistic()
    totals = Totals()
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
        elif isinstance(event, events.NonFatalError):
            totals.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            totals.errors.append(f"fatal: {event.exception!r}")
    totals.seconds = time.monotonic() - started
    totals.cases = statistic.total_cases
    for label, groups in statistic.failures.items():
        for group in groups.values():
            status = group.response.status_code if group.response else None
            for failure in group.failures:
                totals.failures.append(
                    f"{label}: {failure.title} (answered {status})\n"
                    f"  {failure.message}\n  {group.code_sample or ''}"
                )
    return totals


@pytest.mark.parametrize("identity", ["admin", "doctor", "anonymous"])
def test_the_api_answers_as_its_openapi_document_says(
    app: Any,
    auth: Auth,
    identity: str,
    capsys: pytest.CaptureFixture[str],
    localstripe: LocalStripe,
) -> None:
    headers = {} if identity == "anonymous" else auth(identity, sub=f"{identity}-schemathesis")

    with app_pointed_at(localstripe):
        totals = run_schemathesis(app, headers)

    with capsys.disabled():
        print(
            f"\nschemathesis as {identity}: {totals.cases} cases, "
            f"{len(totals.failures)} failures, {len(totals.errors)} errors "
            f"in {totals.seconds:.0f} s"
        )
    assert totals.cases > 200, "schemathesis generated suspiciously few cases"
    assert not totals.failures + totals.errors, "\n\n".join(totals.failures + totals.errors)


# Answers that no operation declares on purpose: any route can fail unexpectedly (500), and
# 405/406 come from the framework, not from an operation.
UNDECLARED_PROBLEMS = {"internal-error", "method-not-allowed", "not-acceptable"}


def test_every_problem_type_the_api_can_answer_is_documented_on_an_operation(app: Any) -> None:
    """A new error class that no route lists (`problem_responses`) or no dependency declares
    (`raises`) would be an answer a generated client cannot expect."""
    from app.errors import problem_catalogue

    documented = {
        problem_type.removeprefix("/problems/")
        for item in app.openapi()["paths"].values()
        for operation in item.values()
        for response in operation.get("responses", {}).values()
        for problem_type in response.get("x-problem-types", [])
    }

    assert set(problem_catalogue()) - UNDECLARED_PROBLEMS - documented == set()
