"""`portal analytics`: SQL over the lake (the marts as Parquet, app/analytics/lake.py) in DuckDB.

Without `--query` it is a small interactive session: statements end with `;` (they may span
lines), results print as a table, `.tables` lists the marts, `.quit` (or Ctrl-D) leaves. With
`--query/-q` it runs one statement and prints its result (`--csv` for CSV). A bad statement
prints DuckDB's message, never a traceback. The session is in memory: nothing is written back.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from app.cli.common import console
from app.config import get_settings

if TYPE_CHECKING:
    import duckdb

PROMPT = "lake> "
CONTINUE = "  ..> "
MAX_ROWS = 1000  # the interactive table's limit (a query's CSV is never cut)
HELP = """statements end with ';'   .tables  the marts   .schema <mart>  its columns
.help  this text   .quit  leave (or Ctrl-D)"""


def analytics(
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Run one SQL statement and exit")
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the result as CSV")] = False,
    lake_url: Annotated[
        str | None, typer.Option("--lake", help="The lake to read (default LAKE_URL)")
    ] = None,
) -> None:
    """SQL over the analytics lake in DuckDB: a view per mart (Parquet files by month)."""
    from app.analytics.lake import Lake, connect

    url = lake_url or get_settings().lake
    try:
        connection, marts = connect(Lake.at(url))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read the lake at {url}: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from exc
    if query is not None:
        if not run(connection, query, as_csv=as_csv):
            raise typer.Exit(1)
        return
    repl(connection, marts, url, as_csv=as_csv)


def run(connection: duckdb.DuckDBPyConnection, statement: str, *, as_csv: bool) -> bool:
    """Run one statement and print its result; False (and DuckDB's message) when it fails."""
    import duckdb

    try:
        result = connection.execute(statement)
        if not result.description:  # a statement without a result
            return True
        names = [column[0] for column in result.description]
        rows = result.fetchall() if as_csv else result.fetchmany(MAX_ROWS + 1)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return True
    print_table(names, rows)
    return True


def print_table(names: list[str], rows: list[tuple[Any, ...]]) -> None:
    table = Table(*names, show_lines=False, header_style="bold")
    for row in rows[:MAX_ROWS]:
        table.add_row(*("NULL" if value is None else str(value) for value in row))
    console.print(table)
    more = f" (first {MAX_ROWS} shown)" if len(rows) > MAX_ROWS else ""
    console.print(f"{min(len(rows), MAX_ROWS)} rows{more}")


def repl(
    connection: duckdb.DuckDBPyConnection, marts: list[str], url: str, *, as_csv: bool
) -> None:
    with contextlib.suppress(ImportError):  # not on every platform; input() still works
        import readline  # noqa: F401 - line editing and history for input()
    console.print(f"DuckDB over the lake at {url}: {len(marts)} marts. .help for help.")
    pending: list[str] = []
    while True:
        try:
            line = input(CONTINUE if pending else PROMPT)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # drop the statement being typed, as shells do
            print()
            pending = []
            continue
        stripped = line.strip()
        if not pending and stripped.startswith("."):
            if not command(connection, marts, stripped):
                return
            continue
        if stripped:
            pending.append(line)
        if stripped.endswith(";"):
            run(connection, "\n".join(pending), as_csv=as_csv)
            pending = []


def command(connection: duckdb.DuckDBPyConnection, marts: list[str], line: str) -> bool:
    """A dot command; False to leave."""
    name, _, argument = line.partition(" ")
    if name in (".quit", ".exit"):
        return False
    if name == ".tables":
        print("\n".join(marts) if marts else "(the lake is empty: run the lake export)")
    elif name == ".schema" and argument.strip() in marts:
        run(connection, f'DESCRIBE "{argument.strip()}"', as_csv=False)
    elif name == ".help":
        print(HELP)
    else:
        print(f"unknown command {line!r}; .help lists them", file=sys.stderr)
    return True
