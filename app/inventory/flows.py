"""Inventory operations with effects beyond stock: the stock alert sweep.

Like every flow, it runs in the caller's transaction and never commits: the CLI
(`portal alerts check`) and the Dagster schedule commit what it did.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from app.actor import Actor
from app.alerts.flows import sync_alerts
from app.alerts.service import AlertSync
from app.audit import service as audit
from app.inventory.alerts import current_stock_conditions
from app.inventory.repository import today as utc_today
from app.models.status import AlertTopic

# Keys named in the audit row of a sweep (the full set is in the alerts table).
AUDITED_KEYS = 50


def check_stock_alerts(session: Session, actor: Actor, *, today: date | None = None) -> AlertSync:
    """Open and clear the `stock` alerts to match low stock, expiring lots and expired-only
    products on `today` (UTC today by default); subscribers of new conditions are told once.
    A sweep that changed something is audited (what opened and cleared, by whom)."""
    on = today or utc_today()
    result = sync_alerts(session, AlertTopic.STOCK, current_stock_conditions(session, today=on))
    if result.opened or result.cleared:
        audit.record(
            session,
            actor,
            "alerts.synced",
            "alert_topic",
            AlertTopic.STOCK.value,
            after={
                "as_of": on,
                "opened": result.opened,
                "cleared": result.cleared,
                "still_open": result.still_open,
                "opened_keys": list(result.opened_keys[:AUDITED_KEYS]),
                "cleared_keys": list(result.cleared_keys[:AUDITED_KEYS]),
            },
        )
    return result
