"""The Dagster job that expires unpaid orders runs the core's expiry on real data."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from app.models.base import utcnow
from pipelines.orders.jobs import expire_unpaid_orders_job
from tests.fixtures.database import TestDatabase

RESERVED_FOR_ORDER = """
SELECT l.id::text, l.quantity_reserved, a.quantity
FROM lot_allocations a
JOIN order_items i ON i.id = a.order_item_id
JOIN lots l ON l.id = a.lot_id
WHERE i.order_id = %s
"""


def _reservations(url: str, order_id: str) -> dict[str, tuple[int, int]]:
    """lot id -> (the lot's reserved units, the order's units from it)."""
    with psycopg.connect(url) as conn:
        return {
            lot: (reserved, mine)
            for lot, reserved, mine in conn.execute(RESERVED_FOR_ORDER, (order_id,))
        }


def test_the_expiry_job_cancels_an_overdue_order_and_releases_its_stock(
    pipeline_db: TestDatabase, resources: dict[str, object]
) -> None:
    with psycopg.connect(pipeline_db.owner_url) as conn:
        row = conn.execute(
            "SELECT id::text FROM orders WHERE status = 'pending' ORDER BY created_at LIMIT 1"
        ).fetchone()
        assert row is not None, "the demo data has a pending order"
        order_id = row[0]
        conn.execute(
            "UPDATE orders SET expires_at = %s WHERE id = %s",
            (utcnow() - timedelta(minutes=1), order_id),
        )
    before = _reservations(pipeline_db.owner_url, order_id)
    assert before and all(mine > 0 for _, mine in before.values())

    result = expire_unpaid_orders_job.execute_in_process(resources=resources)

    assert result.success
    assert result.output_for_node("expire_unpaid_orders") == 1
    with psycopg.connect(pipeline_db.owner_url) as conn:
        status = conn.execute(
            "SELECT status, cancellation_code FROM orders WHERE id = %s", (order_id,)
        ).fetchone()
    assert status == ("cancelled", "payment_expired")
    after = _reservations(pipeline_db.owner_url, order_id)
    for lot, (reserved, mine) in before.items():
        assert after[lot][0] == reserved - mine  # its units are sellable again
    # Nothing is overdue any more: the next run expires nothing.
    again = expire_unpaid_orders_job.execute_in_process(resources=resources)
    assert again.output_for_node("expire_unpaid_orders") == 0
