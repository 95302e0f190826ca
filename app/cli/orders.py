"""`portal orders`: order housekeeping."""

from __future__ import annotations

import typer

from app.cli.common import console, database_urls

commands = typer.Typer(help="Order housekeeping", no_args_is_help=True)


@commands.command("expire")
def orders_expire() -> None:
    """Cancel unpaid orders whose payment window (ORDER_PAYMENT_TTL_HOURS, a self-order's
    SELF_ORDER_PAYMENT_TTL_MINUTES) has closed; Dagster's schedule does it every minute."""
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine
    from app.orders.expiry import expire_all_unpaid_orders

    engine = make_engine(database_urls().app, pool_size=1)
    total = expire_all_unpaid_orders(sessionmaker(engine))
    engine.dispose()
    console.print(f"{total} unpaid orders expired; their stock was released")
