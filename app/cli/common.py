"""What the `portal` commands share: the console, progress bars, signals, the database."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from app.config import Settings, get_settings

console = Console()


def progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C, `kill` and a closed terminal all raise KeyboardInterrupt, so a command stops
    cleanly (also when started in the background, where SIGINT arrives ignored)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


@dataclass(frozen=True)
class DatabaseUrls:
    owner: str  # schema owner: migrations, seeds of bulk data
    app: str  # the restricted application role
    embedded: bool


# Where the database is when DATABASE_URL is unset: in a development checkout, the embedded
# server that devtools registers (app/cli/__init__.py); nowhere in production.
_without_database_url: Callable[[Settings], DatabaseUrls] | None = None


def use_when_no_database_url(start: Callable[[Settings], DatabaseUrls]) -> None:
    global _without_database_url
    _without_database_url = start


def database_urls() -> DatabaseUrls:
    """The configured database (DATABASE_URL, DATABASE_MIGRATION_URL), else the registered
    development database."""
    settings = get_settings()
    if settings.database_url:
        owner = settings.database_migration_url or settings.database_url
        return DatabaseUrls(owner=owner, app=settings.database_url, embedded=False)
    if _without_database_url is None:
        console.print("[red]DATABASE_URL is not set[/red]")
        raise typer.Exit(2)
    return _without_database_url(settings)


def migrate(owner_url: str, revision: str = "head") -> None:
    from alembic import command

    from app.migrations import alembic_config

    command.upgrade(alembic_config(owner_url), revision)
