"""`portal audit`: the audit log's hash chain and its anchors."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import console, database_urls, progress, stop_on_signals
from app.config import get_settings

commands = typer.Typer(help="The audit log", no_args_is_help=True)


@commands.command("seal")
def audit_seal(
    follow: Annotated[bool, typer.Option(help="Keep sealing until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="With --follow: seconds between seals")] = 0.5,
) -> None:
    """Append committed audit rows to the hash chain now (`portal worker` does it every poll)."""
    import time

    from sqlalchemy.orm import sessionmaker

    from app.audit.service import seal_in_own_transaction
    from app.db import make_engine

    engine = make_engine(database_urls().app, pool_size=1)
    sessions = sessionmaker(engine)
    stop_on_signals()
    total = 0
    try:
        while True:
            total += seal_in_own_transaction(sessions)
            if not follow:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
    console.print(f"{total} audit rows sealed into the chain")


@commands.command("anchor")
def audit_anchor() -> None:
    """Seal pending rows, then write the chain's head to AUDIT_ANCHOR_DIR (the worker does it
    every AUDIT_ANCHOR_EVERY_SECONDS)."""
    from sqlalchemy.orm import Session, sessionmaker

    from app.audit.anchors import AnchorConflict, anchor_head
    from app.audit.service import seal_in_own_transaction
    from app.db import make_engine

    engine = make_engine(database_urls().app, pool_size=1)
    try:
        seal_in_own_transaction(sessionmaker(engine))
        with Session(engine) as session:
            written = anchor_head(session, get_settings().anchor_dir)
    except AnchorConflict as exc:
        console.print(f"[red]audit chain rewritten: {exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    if written is None:
        console.print("the audit log is empty: nothing to anchor")
    else:
        anchor, path = written
        console.print(f"anchored row {anchor.seq} ({anchor.row_hash}) in {path}")


@commands.command("verify")
def audit_verify() -> None:
    """Seal pending rows, then check the whole hash chain and every anchor; names the first
    row that was changed, deleted or reordered."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session, sessionmaker

    from app.audit.anchors import anchor_directory, check_anchors, read_anchors
    from app.audit.service import seal_in_own_transaction, verify_chain
    from app.db import make_engine
    from app.models import AuditEntry

    engine = make_engine(database_urls().app, pool_size=1)
    sealed = seal_in_own_transaction(sessionmaker(engine))
    with Session(engine) as session:
        anchors = read_anchors(anchor_directory(session, get_settings().anchor_dir))
        total = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
        with progress() as bar:
            task = bar.add_task("verifying", total=total)
            result = verify_chain(session, progress=lambda n: bar.advance(task, n))
        unkept = check_anchors(session, anchors) if result.ok else None
    engine.dispose()
    if sealed:
        console.print(f"{sealed} pending rows sealed into the chain first")
    if result.unsealed_rows:
        console.print(f"{result.unsealed_rows} rows were written while verifying (not checked)")
    first_break = result.first_break or unkept
    if first_break is None:
        ok = "[green]audit chain intact[/green]"
        console.print(
            f"{ok}: {result.rows_checked} rows, head {result.head_hash};"
            f" {len(anchors)} anchor{'' if len(anchors) == 1 else 's'} kept"
        )
        return
    broken = f"[red]audit chain broken at row {first_break.seq}[/red]"
    console.print(f"{broken}: {first_break.problem}")
    raise typer.Exit(1)
