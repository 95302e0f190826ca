"""The issue's fault test, bounded: paid prescription orders delivered by `portal pharmacy
drain` processes killed and restarted while the reference pharmacy answers 30 % 5xx and lets
10 % of requests time out (half of them after accepting the Bundle) -> each order accepted
exactly once at the pharmacy, none lost, none stuck, dead letters only for the orders the
pharmacy refuses for good. The heavy version (2,000 orders) is benchmarks/pharmacy_faults.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.database import TestDatabase
from tests.fixtures.pharmacy import ReferencePharmacy, run_reference_pharmacy
from tests.fixtures.pharmacy_faults import (
    PHARMACY_LIMIT,
    drain_env,
    drain_with_kills,
    outcome,
    seed_paid_orders,
)

# Small enough to drain in seconds, large enough that every kill lands mid-work and the
# faults hit many sends (asserted below).
ORDERS = 50
REFUSED = 5
KILLS = 3


@pytest.fixture
def faulty_pharmacy(tmp_path: Path) -> Iterator[ReferencePharmacy]:
    with run_reference_pharmacy(tmp_path / "pharmacy.log", "--seed", "11") as server:
        server.settings(max_quantity=PHARMACY_LIMIT)
        yield server


def test_each_paid_order_is_accepted_exactly_once_despite_faults_and_kills(
    fresh_db: TestDatabase, faulty_pharmacy: ReferencePharmacy, tmp_path: Path
) -> None:
    began = time.monotonic()
    seeded = seed_paid_orders(
        fresh_db.app_url,
        faulty_pharmacy.base_url,
        orders=ORDERS,
        refused=REFUSED,
        timeout_seconds=0.4,
    )
    seeding = round(time.monotonic() - began, 1)
    faulty_pharmacy.faults(error_rate=0.3, timeout_rate=0.1, timeout_seconds=1.0)
    run = drain_with_kills(
        drain_env(fresh_db.app_url, fresh_db.owner_url),
        fresh_db.owner_url,
        workers=3,
        kills=KILLS,
        kill_every=(1.5, 4.0),
        deadline_seconds=150,
        seed=7,
        log_path=tmp_path / "drain.log",
    )
    faulty_pharmacy.faults(error_rate=0, timeout_rate=0)
    result = outcome(fresh_db.owner_url, seeded.order_ids)
    stats = faulty_pharmacy.stats()
    print(
        json.dumps(
            {
                "orders": ORDERS,
                "seeding_s": seeding,
                "drain_s": run.seconds,
                "drain_processes": run.started,
                "kills": run.killed,
                "kills_mid_work": run.killed_mid_work,
                **{k: v for k, v in result.items() if k != "dead_letters"},
                "dead_letters": len(result["dead_letters"]),
                "pharmacy": stats,
            }
        )
    )

    assert run.killed == run.killed_mid_work == KILLS
    assert result["submissions"] == ORDERS  # one submission per order, none lost
    assert "pending" not in result["statuses"] and "sending" not in result["statuses"]
    # Accepted exactly once: the pharmacy's de-duplicated count is the number of orders.
    assert stats["distinct_requests"] == seeded.items == ORDERS - REFUSED
    assert result["statuses"].get("accepted", 0) == ORDERS - REFUSED
    # Dead letters only where the pharmacy refused for good, with its message.
    assert sorted(order for order, _ in result["dead_letters"]) == sorted(seeded.refused_order_ids)
    for _, error in result["dead_letters"]:
        assert "exceeds the pharmacy's limit" in error
    # The faults did happen, and re-sends met the de-duplication.
    assert stats["faults_5xx"] > 0 and stats["faults_timeout"] > 0
    assert result["retries"] > 0
