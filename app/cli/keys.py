"""`portal keys`: the PHI encryption keys."""

from __future__ import annotations

import typer

from app.cli.common import console, database_urls, progress
from app.config import get_settings

commands = typer.Typer(help="PHI encryption keys", no_args_is_help=True)


@commands.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every PHI value with the active key (PHI_ACTIVE_KEY_ID); safe to re-run."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.alerts.service import rotate_subscription_keys
    from app.audit import service as audit
    from app.db import make_engine
    from app.models import Patient
    from app.notifications.service import rotate_message_keys
    from app.orders.service import rotate_order_notes
    from app.patients.service import rotate_keys
    from app.payments.reconciliation import rotate_resolution_notes
    from app.pharmacy.service import rotate_pharmacy_keys

    engine = make_engine(database_urls().app, pool_size=1)
    with Session(engine) as session, session.begin():
        total = session.scalar(select(func.count()).select_from(Patient)) or 0
        with progress() as bar:
            task = bar.add_task("re-encrypting", total=total)
            changed = rotate_keys(session, progress=lambda n: bar.advance(task, n))
        orders_changed = rotate_order_notes(session)
        messages_changed = rotate_message_keys(session)
        numbers_changed = rotate_subscription_keys(session)
        notes_changed = rotate_resolution_notes(session)
        pharmacy_changed = rotate_pharmacy_keys(session)
        audit.record(
            session,
            Actor.system("keys-rotate"),
            "phi.keys_rotated",
            "patient",
            "*",
            after={
                "patients_reencrypted": changed,
                "orders_reencrypted": orders_changed,
                "messages_reencrypted": messages_changed,
                "alert_sms_numbers_reencrypted": numbers_changed,
                "reconciliation_notes_reencrypted": notes_changed,
                "pharmacy_rows_reencrypted": pharmacy_changed,
                "active_key_id": get_settings().phi_active_key_id,
            },
        )
    engine.dispose()
    console.print(
        f"{changed} of {total} patients, {orders_changed} orders' notes and"
        f" {messages_changed} queued messages, {numbers_changed} staff SMS numbers and"
        f" {notes_changed} reconciliation notes,"
        f" {pharmacy_changed} pharmacy secrets, exchange logs and dosage texts"
        " re-encrypted with the active key"
    )
