"""Expiry of unpaid orders as a scheduled operation: the flow, batch after batch, each batch in
a transaction of its own (what the Dagster schedule `expire_unpaid_orders` and `portal orders
expire` run)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.actor import Actor
from app.orders.flows import expire_unpaid_orders

EXPIRY_ACTOR = Actor.system("order-expiry")


def expire_all_unpaid_orders(sessions: sessionmaker[Session]) -> int:
    """Every unpaid order past its payment window, cancelled (its stock released) in batches
    of one transaction; returns how many."""
    total = 0
    while True:
        with sessions() as session, session.begin():
            expired = expire_unpaid_orders(session, EXPIRY_ACTOR)
        total += expired
        if expired == 0:
            return total
