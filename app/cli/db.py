"""`portal db`: the database schema."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import console, database_urls, migrate

commands = typer.Typer(help="Database schema", no_args_is_help=True)


@commands.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    urls = database_urls()
    migrate(urls.owner, revision)
    console.print(f"[green]database at {revision}[/green]")


@commands.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from alembic import command

    from app.migrations import alembic_config

    command.downgrade(alembic_config(database_urls().owner), revision)
    console.print(f"[yellow]database at {revision}[/yellow]")
