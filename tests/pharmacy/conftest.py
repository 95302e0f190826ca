"""The pharmacy tests: delivery runs on the test's own connection (their commits are
savepoints, rolled back with the test), against the reference pharmacy over HTTP or, where a
test scripts the pharmacy's answers exactly, the named test double."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.http import forget_tokens
from tests.fixtures.pharmacy import ReferencePharmacy, run_reference_pharmacy
from tests.fixtures.pharmacy_double import pharmacy_double
from tests.fixtures.pharmacy_orders import API_KEY

__all__ = ["pharmacy_double"]


@pytest.fixture(scope="session")
def reference_pharmacy_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReferencePharmacy]:
    """The reference pharmacy (devtools/pharmacy.py) over HTTP on a free loopback port."""
    log = tmp_path_factory.mktemp("pharmacy") / "pharmacy.log"
    with run_reference_pharmacy(log) as server:
        yield server


@pytest.fixture
def reference_pharmacy(reference_pharmacy_server: ReferencePharmacy) -> ReferencePharmacy:
    """The shared reference pharmacy, forgotten, without faults, asking for the tests' key."""
    reference_pharmacy_server.reset()
    forget_tokens()
    reference_pharmacy_server.faults(error_rate=0, timeout_rate=0)
    reference_pharmacy_server.settings(api_key=API_KEY, api_key_header="X-Api-Key")
    return reference_pharmacy_server
