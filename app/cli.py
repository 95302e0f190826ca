"""`portal`: the command-line tool for developers and operators."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from app.config import get_settings, refusal_message
from app.logs import configure_command_logging

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from app.devstack import DatabaseUrls

# Tracebacks never show local variables: they hold patients' details and secrets.
cli = typer.Typer(
    help="Medical ordering portal",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
db_cli = typer.Typer(help="Database schema", no_args_is_help=True)
seed_cli = typer.Typer(help="Demo and scale data", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit log", no_args_is_help=True)
keys_cli = typer.Typer(help="PHI encryption keys", no_args_is_help=True)
orders_cli = typer.Typer(help="Order housekeeping", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(seed_cli, name="seed")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(orders_cli, name="orders")
console = Console()


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _urls() -> DatabaseUrls:
    from app.devstack import database_urls

    return database_urls(get_settings())


def _migrate(owner_url: str, revision: str = "head") -> None:
    from alembic import command

    from app.migrations import alembic_config

    command.upgrade(alembic_config(owner_url), revision)


def _seed_demo(app_url: str) -> dict[str, int]:
    from sqlalchemy.orm import Session

    from app.db import make_engine
    from app.seeds import seed_demo

    engine = make_engine(app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            return seed_demo(session)
    finally:
        engine.dispose()


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    urls = _urls()
    _migrate(urls.owner, revision)
    console.print(f"[green]database at {revision}[/green]")


@db_cli.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from alembic import command

    from app.migrations import alembic_config

    command.downgrade(alembic_config(_urls().owner), revision)
    console.print(f"[yellow]database at {revision}[/yellow]")


@seed_cli.command("demo")
def seed_demo() -> None:
    """Load the demo users, catalog and lots (idempotent)."""
    urls = _urls()
    created = _seed_demo(urls.app)
    console.print("demo data: " + ", ".join(f"{n} {what} added" for what, n in created.items()))


@seed_cli.command("scale")
def seed_scale(
    products: Annotated[int, typer.Option(min=1, help="Products to create")] = 10_000,
    lots: Annotated[
        int, typer.Option(min=0, help="Lots to create (spread over the products)")
    ] = 100_000,
) -> None:
    """Bulk-load synthetic products and lots (for benchmarks), with a receipt movement per lot."""
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.audit import service as audit
    from app.db import make_engine
    from app.seeds import seed_scale as load

    urls = _urls()
    with _progress() as progress:
        task = progress.add_task("loading rows", total=products + lots)
        result = load(
            urls.app, products=products, lots=lots, progress=lambda n: progress.advance(task, n)
        )
    engine = make_engine(urls.app, pool_size=1)
    with Session(engine) as session, session.begin():
        audit.record(
            session,
            Actor.system("seed-scale"),
            "catalog.bulk_loaded",
            "catalog",
            "scale",
            after={"products": products, "lots": lots},
        )
    engine.dispose()
    rows = result.products + result.lots + result.movements
    console.print(
        f"{result.products} products, {result.lots} lots, {result.movements} movements:"
        f" {rows} rows in {result.seconds:.1f} s = {result.rows_per_second:,.0f} rows/s"
    )


@cli.command("dev-token")
def dev_token(
    role: Annotated[str, typer.Option(help="admin or doctor")] = "admin",
    email: Annotated[str | None, typer.Option(help="Any address gives a distinct user")] = None,
    email_verified: Annotated[
        bool,
        typer.Option(
            "--email-verified/--email-unverified",
            help="Whether the provider vouches for the e-mail (needed to claim an invitation)",
        ),
    ] = True,
) -> None:
    """Print an access token from the development identity provider (for curl and scripts)."""
    from app.dev_identity import DevTokenError, obtain_dev_token

    settings = get_settings()
    if settings.environment == "production":
        console.print("[red]dev-token is for development; use your identity provider[/red]")
        raise typer.Exit(2)
    if role not in ("admin", "doctor"):
        console.print("[red]--role must be admin or doctor[/red]")
        raise typer.Exit(2)
    try:
        token = obtain_dev_token(
            settings.oidc_issuer,
            role=role,
            email=email,
            email_verified=email_verified,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
        )
    except DevTokenError as exc:
        console.print(f"[red]{exc}[/red] (is `make run` running?)")
        raise typer.Exit(1) from exc
    print(token["access_token"])


@audit_cli.command("seal")
def audit_seal(
    follow: Annotated[bool, typer.Option(help="Keep sealing until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="With --follow: seconds between seals")] = 0.5,
) -> None:
    """Append committed audit rows to the hash chain now (`portal worker` does it every poll)."""
    import time

    from sqlalchemy.orm import sessionmaker

    from app.audit.service import seal_in_own_transaction
    from app.db import make_engine

    engine = make_engine(_urls().app, pool_size=1)
    sessions = sessionmaker(engine)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
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


@audit_cli.command("anchor")
def audit_anchor() -> None:
    """Seal pending rows, then write the chain's head to AUDIT_ANCHOR_DIR (the worker does it
    every AUDIT_ANCHOR_EVERY_SECONDS)."""
    from sqlalchemy.orm import Session, sessionmaker

    from app.audit.anchors import AnchorConflict, anchor_head
    from app.audit.service import seal_in_own_transaction
    from app.db import make_engine

    engine = make_engine(_urls().app, pool_size=1)
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


@audit_cli.command("verify")
def audit_verify() -> None:
    """Seal pending rows, then check the whole hash chain and every anchor; names the first
    row that was changed, deleted or reordered."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session, sessionmaker

    from app.audit.anchors import anchor_directory, check_anchors, read_anchors
    from app.audit.service import seal_in_own_transaction, verify_chain
    from app.db import make_engine
    from app.models import AuditEntry

    engine = make_engine(_urls().app, pool_size=1)
    sealed = seal_in_own_transaction(sessionmaker(engine))
    with Session(engine) as session:
        anchors = read_anchors(anchor_directory(session, get_settings().anchor_dir))
        total = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
        with _progress() as progress:
            task = progress.add_task("verifying", total=total)
            result = verify_chain(session, progress=lambda n: progress.advance(task, n))
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


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every PHI value with the active key (PHI_ACTIVE_KEY_ID); safe to re-run."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.audit import service as audit
    from app.db import make_engine
    from app.models import Patient
    from app.orders.service import rotate_order_notes
    from app.patients.service import rotate_keys

    engine = make_engine(_urls().app, pool_size=1)
    with Session(engine) as session, session.begin():
        total = session.scalar(select(func.count()).select_from(Patient)) or 0
        with _progress() as progress:
            task = progress.add_task("re-encrypting", total=total)
            changed = rotate_keys(session, progress=lambda n: progress.advance(task, n))
        orders_changed = rotate_order_notes(session)
        audit.record(
            session,
            Actor.system("keys-rotate"),
            "phi.keys_rotated",
            "patient",
            "*",
            after={
                "patients_reencrypted": changed,
                "orders_reencrypted": orders_changed,
                "active_key_id": get_settings().phi_active_key_id,
            },
        )
    engine.dispose()
    console.print(
        f"{changed} of {total} patients and {orders_changed} orders' notes re-encrypted"
        " with the active key"
    )


@orders_cli.command("expire")
def orders_expire() -> None:
    """Cancel unpaid orders whose payment window (ORDER_PAYMENT_TTL_HOURS, a self-order's
    SELF_ORDER_PAYMENT_TTL_MINUTES) has closed; the worker does it every minute."""
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine

    engine = make_engine(_urls().app, pool_size=1)
    total = _expire_unpaid_orders(sessionmaker(engine))
    engine.dispose()
    console.print(f"{total} unpaid orders expired; their stock was released")


def _expire_unpaid_orders(sessions: sessionmaker[Session]) -> int:
    """Every unpaid order past its payment window, cancelled in batches of one transaction."""
    from app.actor import Actor
    from app.orders.flows import expire_unpaid_orders

    total = 0
    while True:
        with sessions() as session, session.begin():
            expired = expire_unpaid_orders(session, Actor.system("order-expiry"))
        total += expired
        if expired == 0:
            return total


# How often the worker expires unpaid orders (self-orders hold stock for only
# SELF_ORDER_PAYMENT_TTL_MINUTES) and prunes closed rate-limit windows.
HOUSEKEEPING_EVERY_SECONDS = 60


@cli.command("worker")
def worker(
    once: Annotated[bool, typer.Option(help="Deliver what is due, then exit")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls when idle")] = 1.0,
) -> None:
    """Deliver the outbox (refunds, notifications) with retries, seal the audit log into its
    hash chain and anchor its head every AUDIT_ANCHOR_EVERY_SECONDS; every minute expire unpaid
    orders past their payment window and prune closed rate-limit windows. Ctrl-C stops it."""
    import time

    from sqlalchemy.orm import sessionmaker

    from app.audit.anchors import AnchorConflict, anchor_head
    from app.audit.service import seal_in_own_transaction
    from app.db import make_engine
    from app.integrations.stripe.refunds import REFUND_TOPIC
    from app.notifications.service import EMAIL_TOPIC, SMS_TOPIC, deliver_email, deliver_sms
    from app.outbox.service import deliver_due
    from app.payments.flows import deliver_refund
    from app.ratelimit import prune

    handlers = {
        REFUND_TOPIC: deliver_refund,
        EMAIL_TOPIC: deliver_email,
        SMS_TOPIC: deliver_sms,
    }
    engine = make_engine(_urls().app, pool_size=2)
    sessions = sessionmaker(engine, expire_on_commit=False)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    next_anchor = 0.0  # the first poll anchors
    next_housekeeping = 0.0  # and keeps house
    try:
        while True:
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY_SECONDS
                expired = _expire_unpaid_orders(sessions)
                with sessions() as session, session.begin():
                    pruned = prune(session.connection())
                if expired or pruned:
                    console.print(
                        f"{expired} unpaid orders expired (stock released),"
                        f" {pruned} closed rate-limit windows pruned"
                    )
            report = deliver_due(sessions, handlers)
            sealed = seal_in_own_transaction(sessions)
            anchor_every = get_settings().audit_anchor_every_seconds
            if anchor_every and time.monotonic() >= next_anchor:
                next_anchor = time.monotonic() + anchor_every
                try:
                    with sessions() as session:  # sealed just above
                        anchor_head(session, get_settings().anchor_dir)
                except (AnchorConflict, OSError) as exc:  # loud, but deliveries go on
                    console.print(f"[red]audit anchor not written: {exc}[/red]")
            if report.delivered or report.retried or report.dead:
                console.print(
                    f"outbox: {report.delivered} delivered, {report.retried} to retry,"
                    f" {report.dead} dead-lettered"
                )
            if once:
                return
            if not (report.delivered or report.retried or report.dead or sealed):
                time.sleep(interval)
    except KeyboardInterrupt:
        console.print("worker stopped")
    finally:
        engine.dispose()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@cli.command("mail-sink")
def mail_sink(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default SMTP_PORT)")] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Where messages go (default DATA_DIR/mail)")
    ] = None,
) -> None:
    """Development SMTP server on loopback: keeps every message as an .eml file."""
    from app.notifications.mail_sink import run

    settings = get_settings()
    port = port or settings.smtp_port
    folder = folder or settings.data_dir / "mail"
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    console.print(f"mail sink on smtp://127.0.0.1:{port}, messages in {folder}", soft_wrap=True)
    try:
        run(folder, "127.0.0.1", port)
    except KeyboardInterrupt:
        console.print("mail sink stopped")
    except OSError as exc:
        console.print(f"[red]mail sink cannot listen on 127.0.0.1:{port}: {exc.strerror}[/red]")
        raise typer.Exit(1) from exc


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost")


@cli.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default API_HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes; 0 = one per CPU", min=0, max=64)
    ] = 0,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Run the API (what a deployment runs): worker processes that each listen on the address,
    so the kernel spreads connections evenly across them."""
    from app.server import serve as run

    settings = get_settings()
    count = workers or len(os.sched_getaffinity(0))
    host = host or settings.api_host
    port = port or settings.api_port
    raise typer.Exit(run(host, port, workers=count, access_log=access_log))


@cli.command("up")
def up(
    api_port: Annotated[int | None, typer.Option(help="Port of the API (default API_PORT)")] = None,
) -> None:
    """Start the whole portal for development: database, identity provider, API."""
    from app.devstack import (
        Supervisor,
        identity_provider_argv,
        register_stripe_webhook,
        stripe_stand_in_argv,
        venv_binary,
    )

    settings = get_settings()
    port = api_port or settings.api_port
    # Ctrl-C, `kill` and a closed terminal all stop everything cleanly (also when started in
    # the background, where SIGINT arrives ignored).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    with console.status("starting PostgreSQL"):
        urls = _urls()
    where = f"embedded, data in {settings.data_dir / 'pg'}" if urls.embedded else "DATABASE_URL"
    console.print(f"PostgreSQL: {where}")
    with console.status("applying migrations"):
        _migrate(urls.owner)
    created = _seed_demo(urls.app)
    console.print("demo data: " + ", ".join(f"{n} {what} added" for what, n in created.items()))

    supervisor = Supervisor(log_dir=settings.data_dir / "logs")
    issuer = settings.oidc_issuer.rstrip("/")
    env = {
        "DATABASE_URL": urls.app,
        "DATABASE_MIGRATION_URL": urls.owner,
        "OIDC_ISSUER": issuer,
    }
    if settings.stripe_api_base and _is_local(settings.stripe_api_base):
        # The local stand-in's Stripe.js has the Card Element, not the Payment Element.
        env["STRIPE_CHECKOUT_UI"] = "card_element"
    try:
        if _is_local(issuer):
            idp_port = urlsplit(issuer).port or 80
            supervisor.start("identity-provider", identity_provider_argv(idp_port))
            supervisor.wait_http("identity-provider", issuer + "/.well-known/openid-configuration")
        stripe_base = settings.stripe_api_base
        if stripe_base and _is_local(stripe_base):
            supervisor.start("stripe", stripe_stand_in_argv(urlsplit(stripe_base).port or 80))
            supervisor.wait_http("stripe", stripe_base + "/js.stripe.com/v3/")
        mail_sink = settings.smtp_host in ("127.0.0.1", "localhost")
        if mail_sink:
            supervisor.start(
                "mail-sink", [venv_binary("portal"), "mail-sink", "--port", str(settings.smtp_port)]
            )
            supervisor.wait_tcp("mail-sink", "127.0.0.1", settings.smtp_port)
        supervisor.start(
            "api",
            [
                venv_binary("portal"),
                "serve",
                "--host",
                settings.api_host,
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
        )
        api = f"http://{settings.api_host}:{port}"
        supervisor.wait_http("api", api + "/healthz")
        if stripe_base and _is_local(stripe_base):
            register_stripe_webhook(
                stripe_base, api + "/api/v1/payments/webhook", settings.stripe_webhook_secret
            )
        supervisor.start("worker", [venv_binary("portal"), "worker"], env=env)
        mail_line = (
            f"{settings.data_dir / 'mail'}   (.eml files from the SMTP sink on"
            f" 127.0.0.1:{settings.smtp_port})"
            if mail_sink
            else f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        )
        sms_line = (
            f"{settings.data_dir / 'sms.log'}   (SMS_PROVIDER=log)"
            if settings.sms_provider == "log"
            else f"SMS_PROVIDER={settings.sms_provider}"
        )
        console.print(
            f"""
[bold green]The portal is up.[/bold green]  Press Ctrl-C to stop everything.

  API docs            {api}/docs   (Authorize, then oidc's Authorize: sign in as a demo login)
  OpenAPI             {api}/openapi.json
  Identity provider   {issuer}   (development stand-in for Okta/Auth0)
  Stripe              {stripe_base}   (local stand-in, webhooks to the API)
  Mail                {mail_line}
  SMS                 {sms_line}
  Logs                {settings.data_dir / "logs"}

Demo logins (the development identity provider asks only for the subject):
  admin    admin@demo.clinic
  doctor   doctor@demo.clinic

Get a token and call the API:
  TOKEN=$(.venv/bin/portal dev-token --role admin)
  curl -H "Authorization: Bearer $TOKEN" {api}/api/v1/products
""",
            soft_wrap=True,  # paths and URLs stay whole on narrow terminals and in logs
        )
        reason = supervisor.watch()
        console.print(f"stopping ({reason})")
    finally:
        supervisor.stop()
    if reason != "interrupted":
        raise typer.Exit(1)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back safely.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    configure_command_logging()
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


if __name__ == "__main__":
    main()
