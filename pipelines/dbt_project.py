"""Where the dbt project is and how to run it against a portal database.

The profile (`dbt/profiles.yml`) reads its connection from `PORTAL_DBT_*` environment
variables; `dbt_environment(url)` derives them from a libpq or SQLAlchemy URL, Unix-socket URLs
(`postgresql://user@/db?host=/socket/dir`) included. dbt needs a role that can read the
portal's tables in `public` and create schemas (the schema owner, DATABASE_MIGRATION_URL), not
the restricted application role.

By hand: `python -m pipelines.dbt_project build` runs `dbt build` against the schema owner's
database (DATABASE_MIGRATION_URL, else DATABASE_URL, else the development embedded server).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from app.config import get_settings

DBT_PROJECT_DIR: Path = Path(__file__).resolve().parent.parent / "dbt"
DBT_PROFILES_DIR: Path = DBT_PROJECT_DIR
# The dbt of the running virtual environment (dagster-dbt's `dbt_executable`).
DBT_EXECUTABLE: Path = Path(sys.executable).parent / "dbt"

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
DEFAULT_THREADS = 4


def dbt_environment(database_url: str) -> dict[str, str]:
    """The variables `dbt/profiles.yml` reads, for the database `database_url` names.

    Query parameters win over the URL's authority, as in libpq (`?host=/run/pg&port=5433`).
    An empty host means libpq's default socket directory.
    """
    parts = urlsplit(database_url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("database URL must start with postgresql:// (or postgresql+psycopg://)")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = query.get("port") or (str(parts.port) if parts.port else "5432")
    except ValueError as error:  # a port that is not a number
        raise ValueError("database URL has an invalid port") from error
    host = query.get("host") or (parts.hostname or "")
    if not host:
        host = "/var/run/postgresql" if Path("/var/run/postgresql").exists() else "/tmp"  # noqa: S108
    dbname = query.get("dbname") or unquote(parts.path.lstrip("/"))
    user = query.get("user") or unquote(parts.username or "")
    if not dbname or not user:
        raise ValueError("database URL must name a user and a database")
    password = query.get("password") or unquote(parts.password or "")
    environment = {
        "PORTAL_DBT_HOST": unquote(host),
        "PORTAL_DBT_PORT": port,
        "PORTAL_DBT_USER": user,
        "PORTAL_DBT_PASSWORD": password,
        "PORTAL_DBT_DBNAME": dbname,
        "PORTAL_DBT_SSLMODE": query.get("sslmode", "prefer"),
        "PORTAL_DBT_THREADS": os.environ.get("PORTAL_DBT_THREADS", str(DEFAULT_THREADS)),
        "PORTAL_DBT_ANALYST_ROLE": get_settings().database_analyst_role,
        # Offline: no anonymous usage statistics (their DNS look-up alone costs seconds).
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    return environment


def run_dbt(args: list[str], database_url: str) -> subprocess.CompletedProcess[str]:
    """Run this venv's `dbt` with `args` in the project against `database_url`; output captured.

    `--project-dir` and `--profiles-dir` are added; the caller reads `returncode`.
    """
    environment = {**os.environ, **dbt_environment(database_url), "DBT_USE_COLORS": "false"}
    command = [
        str(DBT_EXECUTABLE),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROFILES_DIR),
    ]
    return subprocess.run(  # noqa: S603 - a fixed executable, arguments from the caller
        command,
        cwd=DBT_PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: list[str]) -> int:
    """`python -m pipelines.dbt_project [dbt arguments]` (default `build`): dbt against the
    schema owner's database, found as the `portal` command finds it (DATABASE_MIGRATION_URL,
    else DATABASE_URL, else in a development checkout the embedded server)."""
    import click

    from app.cli import register_development_commands
    from app.cli.common import database_urls

    register_development_commands()
    try:
        url = database_urls().owner
    except click.exceptions.Exit as stop:
        return int(stop.exit_code)
    result = run_dbt(argv or ["build"], url)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
