"""`portal`: the command-line tool for developers and operators.

Each command group lives in a module of its own here; the development commands (`up`,
`dev-token`, `seed`, `mail-sink`) come from the devtools package: `main()` registers them when
it is importable (always in a checkout; a production image may leave it out).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer

from app.cli import alerts, audit, db, keys, orders, payments, pharmacy
from app.cli.analytics import analytics
from app.cli.serve import serve
from app.cli.worker import worker
from app.config import refusal_message
from app.logs import configure_command_logging

# Tracebacks never show local variables: they hold patients' details and secrets.
cli = typer.Typer(
    help="Medical ordering portal",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
cli.add_typer(db.commands, name="db")
cli.add_typer(audit.commands, name="audit")
cli.add_typer(keys.commands, name="keys")
cli.add_typer(orders.commands, name="orders")
cli.add_typer(alerts.commands, name="alerts")
cli.add_typer(payments.commands, name="payments")
cli.add_typer(pharmacy.commands, name="pharmacy")
cli.command("worker")(worker)
cli.command("serve")(serve)
cli.command("analytics")(analytics)


def register_development_commands() -> None:
    """The one place app/ imports devtools (tests/test_devtools_boundary.py holds it to that).
    Called by `main()`, not on import, so devtools may import the modules of this package."""
    try:
        from devtools.cli import register
    except ModuleNotFoundError as exc:
        if exc.name != "devtools":
            raise  # devtools is there but broken: say so
        return
    register(cli)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back safely.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    configure_command_logging()
    register_development_commands()
    try:
        cli(prog_name="portal")
    except Exception as exc:
        refused = refusal_message(exc)
        if refused is not None:
            # Refused settings are the operator's to fix: the list of problems, no traceback.
            print(refused, file=sys.stderr)
            sys.exit(2)
        # Through the redacting handler: the traceback without locals or PHI values.
        logging.getLogger("app.cli").error("portal stopped by %s", type(exc).__name__, exc_info=exc)
        sys.exit(1)
