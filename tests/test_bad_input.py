"""Bad input to the catalog and inventory writes: refused with problem+json, nothing written.

Every case asserts the response shape and that the products, lots, stock_movements and audit_log
tables hold exactly the rows they held before the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.catalog import PRODUCTS, create_product, product_body, receive_lot, row_counts
from tests.fixtures.problems import assert_problem

Headers = dict[str, str]
MIB = 1_048_576


@dataclass(frozen=True)
class Existing:
    product_id: str
    lot_id: str

    def url(self, endpoint: str) -> str:
        return {
            "product": PRODUCTS,
            "lot": f"{PRODUCTS}/{self.product_id}/lots",
            "adjustment": f"/api/v1/lots/{self.lot_id}/adjustments",
            "status": f"/api/v1/lots/{self.lot_id}/status",
        }[endpoint]


VALID_BODIES: dict[str, dict[str, Any]] = {
    "product": product_body(sku="BAD-INPUT-NEW"),
    "lot": {"lot_number": "BAD-INPUT-LOT", "quantity": 5},
    "adjustment": {"delta": -1, "reason": "count_correction"},
    "status": {"status": "quarantined", "reason": "hold"},
}


@pytest.fixture
def existing(client: TestClient, admin: Headers) -> Existing:
    """A product with a lot, created by `admin` (which also provisions admin's user row)."""
    product = create_product(client, admin, sku="BAD-INPUT-EXISTING")
    lot = receive_lot(client, admin, product["id"], quantity=10)
    return Existing(product_id=product["id"], lot_id=lot["id"])


@pytest.fixture
def unchanged(db: Session, existing: Existing) -> Iterator[None]:
    """Fails the test if the request under test wrote any row."""
    before = row_counts(db)
    yield
    assert row_counts(db) == before


# -- values the schemas refuse ---------------------------------------------------------------------

NOT_POSITIVE_INTEGERS = [-1, 0, 1.5, "5", True, 10**12]
NOT_LEVELS = [-1, 1.5, "5", 10**12]  # 0 is a valid par level / reorder quantity

SCHEMA_CASES = [
    *[("product", "price_cents", value) for value in NOT_POSITIVE_INTEGERS],
    *[("product", "par_level", value) for value in NOT_LEVELS],
    *[("product", "reorder_quantity", value) for value in NOT_LEVELS],
    ("product", "perishable", "yes"),
    ("product", "sku", "has spaces"),
    ("product", "sku", ""),
    ("product", "name", ""),
    ("product", "name", "x" * 201),
    ("product", "name", "nul\x00byte"),
    ("product", "colour", "red"),  # unknown field
    *[("lot", "quantity", value) for value in NOT_POSITIVE_INTEGERS],
    ("lot", "expiration_date", "31/12/2099"),
    ("lot", "lot_number", "../../etc"),
    ("lot", "supplier", "ACME"),  # unknown field
    *[("adjustment", "delta", value) for value in [0, 1.5, "5", True, 10**12, -(10**12)]],
    ("adjustment", "reason", "theft"),
    ("adjustment", "note", "x" * 501),
    ("adjustment", "note", "nul\x00byte"),
    ("adjustment", "lot_id", "00000000-0000-4000-8000-000000000002"),  # unknown field
    ("status", "status", "destroyed"),
    ("status", "reason", ""),
    ("status", "reason", "nul\x00byte"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    SCHEMA_CASES,
    ids=[f"{e}-{f}-{v!r:.20}" for e, f, v in SCHEMA_CASES],
)
def test_invalid_field_value_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, admin: Headers, existing: Existing, endpoint: str, field: str, value: Any
) -> None:
    body = {**VALID_BODIES[endpoint], field: value}

    response = client.post(existing.url(endpoint), json=body, headers=admin)

    problem = assert_problem(response, 422, "/problems/validation-error")
    assert field in [error["field"] for error in problem["errors"]], problem


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("endpoint", ["product", "lot", "adjustment", "status"])
def test_missing_required_fields_is_422_and_writes_nothing(
    client: TestClient, admin: Headers, existing: Existing, endpoint: str
) -> None:
    response = client.post(existing.url(endpoint), json={}, headers=admin)

    problem = assert_problem(response, 422, "/problems/validation-error")
    assert all(error["code"] == "missing" for error in problem["errors"])


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("field", ["price_cents", "par_level", "name", "active", "colour"])
def test_invalid_product_patch_is_422_and_changes_nothing(
    client: TestClient, admin: Headers, existing: Existing, field: str
) -> None:
    value = {"price_cents": 0, "par_level": -5, "name": "", "active": "no", "colour": "red"}[field]
    url = f"{PRODUCTS}/{existing.product_id}"
    before = client.get(url, headers=admin).json()

    response = client.patch(url, json={field: value}, headers=admin)

    assert_problem(response, 422, "/problems/validation-error")
    assert client.get(url, headers=admin).json() == before


# -- bodies that are not JSON objects --------------------------------------------------------------

WRITE_ENDPOINTS = ["product", "lot", "adjustment", "status"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
@pytest.mark.parametrize("content", [b'{"sku":', b"{'sku': 1}", b"\xff\xfe", b"{} {}"])
def test_malformed_json_is_400_malformed_json_and_writes_nothing(
    client: TestClient, admin: Headers, existing: Existing, endpoint: str, content: bytes
) -> None:
    response = client.post(
        existing.url(endpoint),
        content=content,
        headers={**admin, "Content-Type": "application/json"},
    )

    assert_problem(response, 400, "/problems/malformed-json")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
def test_body_that_is_not_json_is_415_and_writes_nothing(
    client: TestClient,
    admin: Headers,
    existing: Existing,
    endpoint: str,
    content_type: str | None,
) -> None:
    headers = dict(admin)
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = client.post(
        existing.url(endpoint),
        content=json.dumps(VALID_BODIES[endpoint]).encode(),
        headers=headers,
    )

    assert_problem(response, 415, "/problems/unsupported-media-type")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_one_mebibyte_is_413_and_writes_nothing(
    client: TestClient, admin: Headers, existing: Existing, endpoint: str, chunked: bool
) -> None:
    body = json.dumps({**VALID_BODIES[endpoint], "padding": "x" * MIB}).encode()
    assert len(body) > MIB

    def in_chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = client.post(
        existing.url(endpoint),
        content=in_chunks() if chunked else body,
        headers={**admin, "Content-Type": "application/json"},
    )

    assert_problem(response, 413, "/problems/payload-too-large")


@pytest.mark.usefixtures("unchanged")
def test_body_of_exactly_one_mebibyte_is_not_refused_for_its_size(
    client: TestClient, admin: Headers, existing: Existing
) -> None:
    url = f"{PRODUCTS}/{existing.product_id}"
    name = client.get(url, headers=admin).json()["name"]
    body = json.dumps({"name": name}).encode()
    body = body[:-1] + b" " * (MIB - len(body)) + b"}"  # whitespace padding: still valid JSON
    assert len(body) == MIB

    response = client.patch(
        url, content=body, headers={**admin, "Content-Type": "application/json"}
    )

    # Handled (a no-op rename, so nothing is written): the limit is 1 MiB, not less.
    assert response.status_code == 200, response.text


# -- unknown ids -----------------------------------------------------------------------------------

UNKNOWN = "00000000-0000-4000-8000-000000000000"
UNKNOWN_ID_CASES = [
    ("GET", f"{PRODUCTS}/{UNKNOWN}", None),
    ("PATCH", f"{PRODUCTS}/{UNKNOWN}", {"name": "x"}),
    ("DELETE", f"{PRODUCTS}/{UNKNOWN}", None),
    ("GET", f"{PRODUCTS}/{UNKNOWN}/lots", None),
    ("POST", f"{PRODUCTS}/{UNKNOWN}/lots", VALID_BODIES["lot"]),
    ("GET", f"/api/v1/lots/{UNKNOWN}", None),
    ("GET", f"/api/v1/lots/{UNKNOWN}/movements", None),
    ("POST", f"/api/v1/lots/{UNKNOWN}/status", VALID_BODIES["status"]),
    ("POST", f"/api/v1/lots/{UNKNOWN}/adjustments", VALID_BODIES["adjustment"]),
    ("POST", f"/api/v1/lots/{UNKNOWN}/adjustments", {"delta": 5, "reason": "returned"}),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("method", "url", "body"),
    UNKNOWN_ID_CASES,
    ids=[f"{m}-{u.replace(UNKNOWN, 'unknown')}" for m, u, _ in UNKNOWN_ID_CASES],
)
def test_unknown_id_is_404_and_writes_nothing(
    client: TestClient,
    admin: Headers,
    existing: Existing,
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    response = client.request(method, url, json=body, headers=admin)

    problem = assert_problem(response, 404, "/problems/not-found")
    assert UNKNOWN in problem["detail"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("url", "status", "problem_type"),
    [
        (f"{PRODUCTS}/not-a-uuid", 422, "/problems/validation-error"),
        ("/api/v1/lots/12345", 422, "/problems/validation-error"),
        ("/api/v1/lots/%00", 400, "/problems/bad-request"),
    ],
)
def test_id_that_is_not_a_uuid_is_a_client_error_and_writes_nothing(
    client: TestClient, admin: Headers, existing: Existing, url: str, status: int, problem_type: str
) -> None:
    response = client.get(url, headers=admin)

    assert_problem(response, status, problem_type)
