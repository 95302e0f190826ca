from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.http import forget_tokens
from tests.fixtures.pharmacy import ReferencePharmacy, run_reference_pharmacy


@pytest.fixture(scope="session")
def reference_pharmacy_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReferencePharmacy]:
    log = tmp_path_factory.mktemp("pharmacy") / "pharmacy.log"
    with run_reference_pharmacy(log) as server:
        yield server


@pytest.fixture
def reference_pharmacy(reference_pharmacy_server: ReferencePharmacy) -> ReferencePharmacy:
    """The shared reference pharmacy, forgotten and without faults."""
    reference_pharmacy_server.reset()
    forget_tokens()  # the pharmacy forgot the tokens it issued
    return reference_pharmacy_server
