"""The development commands of `portal`: `up`, `dev-token`, `seed demo|scale`, `mail-sink`.

`app.cli.main()` calls `register` when this package is importable; it also makes the embedded
PostgreSQL the database of every command when DATABASE_URL is unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from app.cli.common import (
    DatabaseUrls,
    console,
    database_urls,
    migrate,
    progress,
    stop_on_signals,
    use_when_no_database_url,
)
from app.config import Settings, get_settings

seed_cli = typer.Typer(help="Demo and scale data", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    use_when_no_database_url(_embedded_database)
    cli.add_typer(seed_cli, name="seed")
    cli.command("dev-token")(dev_token)
    cli.command("mail-sink")(mail_sink)
    cli.command("up")(up)


def _embedded_database(settings: Settings) -> DatabaseUrls:
    from devtools.devstack import embedded_database_urls

    return embedded_database_urls(settings)


def _seed_demo(app_url: str) -> dict[str, int]:
    from sqlalchemy.orm import Session

    from app.db import make_engine
    from devtools.seeds import seed_demo

    engine = make_engine(app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            return seed_demo(session)
    finally:
        engine.dispose()


@seed_cli.command("demo")
def seed_demo() -> None:
    """Load the demo users, catalog and lots (idempotent)."""
    urls = database_urls()
    created = _seed_demo(urls.app)
    console.print("demo data: " + ", ".join(f"{n} {what} added" for what, n in created.items()))


@seed_cli.command("scale")
def seed_scale(
    products: Annotated[int, typer.Option(min=1, help="Products to create")] = 10_000,
    lots: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Lots to create, spread over the products (default 100,000; without --orders"
            " only: with --orders the lots follow the orders' demand)",
        ),
    ] = None,
    orders: Annotated[
        int,
        typer.Option(
            min=0,
            help="Load 18 months of order history instead of the catalog alone: doctors,"
            " patients, products, orders, payments, refunds, lots and their ledger",
        ),
    ] = 0,
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed; with --orders, the same seed (in the same hour) gives the same rows"
        ),
    ] = 7,
) -> None:
    """Bulk-load synthetic data for benchmarks with COPY: a catalog of products and lots, or
    with --orders N a whole order history (see devtools/scale.py)."""
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.audit import service as audit
    from app.db import make_engine

    if orders and lots is not None:
        console.print(
            "[red]--lots applies without --orders only: the history's lots follow its orders[/red]"
        )
        raise typer.Exit(2)
    urls = database_urls()
    if orders:
        # The owner may load with the foreign keys checked once at the end (much faster).
        entry = _load_history(urls.owner, orders=orders, products=products, seed=seed)
    else:
        entry = _load_catalog(
            urls.app, products=products, lots=100_000 if lots is None else lots, seed=seed
        )
    engine = make_engine(urls.app, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            action, entity_type, after = entry
            audit.record(
                session, Actor.system("seed-scale"), action, entity_type, "scale", after=after
            )
    finally:
        engine.dispose()


def _load_catalog(
    app_url: str, *, products: int, lots: int, seed: int
) -> tuple[str, str, dict[str, Any]]:
    from devtools.seeds import seed_scale as load

    with progress() as bar:
        task = bar.add_task("loading rows", total=products + lots)
        result = load(
            app_url,
            products=products,
            lots=lots,
            seed=seed,
            progress=lambda n: bar.advance(task, n),
        )
    rows = result.products + result.lots + result.movements
    console.print(
        f"{result.products} products, {result.lots} lots, {result.movements} movements:"
        f" {rows} rows in {result.seconds:.1f} s = {result.rows_per_second:,.0f} rows/s"
    )
    return "catalog.bulk_loaded", "catalog", {"products": products, "lots": lots}


def _load_history(
    app_url: str, *, orders: int, products: int, seed: int
) -> tuple[str, str, dict[str, Any]]:
    from devtools.scale import HistoryAlreadyLoaded, seed_history

    with progress() as bar:
        task = bar.add_task("loading orders", total=orders)
        try:
            result = seed_history(
                app_url,
                orders=orders,
                products=products,
                seed=seed,
                progress=lambda n: bar.advance(task, n),
            )
        except HistoryAlreadyLoaded as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    for table, count in result.rows.items():
        console.print(f"  {table:<16} {count:>12,}")
    console.print(
        f"{result.total_rows:,} rows in {result.seconds:.1f} s"
        f" = {result.rows_per_second:,.0f} rows/s"
        f" (orders from {result.first_order_at:%Y-%m-%d} to {result.last_order_at:%Y-%m-%d};"
        f" foreign keys {result.foreign_keys})"
    )
    return (
        "history.bulk_loaded",
        "seed",
        {
            "seed": seed,
            "first_order_at": result.first_order_at.isoformat(),
            "last_order_at": result.last_order_at.isoformat(),
            **result.rows,
        },
    )


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
    from devtools.identity import DevTokenError, obtain_dev_token

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


def mail_sink(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default SMTP_PORT)")] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Where messages go (default DATA_DIR/mail)")
    ] = None,
) -> None:
    """Development SMTP server on loopback: keeps every message as an .eml file."""
    from devtools.mail_sink import run

    settings = get_settings()
    port = port or settings.smtp_port
    folder = folder or settings.data_dir / "mail"
    stop_on_signals()
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


def up(
    api_port: Annotated[int | None, typer.Option(help="Port of the API (default API_PORT)")] = None,
) -> None:
    """Start the whole portal for development: database, identity provider, Stripe stand-in,
    mail sink, reference pharmacy, API, worker, staff portal (Streamlit) and Dagster (UI and
    daemon)."""
    from app.db import with_user
    from devtools.devstack import (
        Supervisor,
        dagster_daemon_argv,
        dagster_environment,
        dagster_storage_url,
        dagster_webserver_argv,
        ensure_reference_pharmacy,
        identity_provider_argv,
        prepare_dagster_home,
        reference_pharmacy_argv,
        register_stripe_webhook,
        streamlit_argv,
        stripe_stand_in_argv,
        ui_environment,
        venv_binary,
        write_ui_secrets,
    )

    settings = get_settings()
    port = api_port or settings.api_port
    # Ctrl-C, `kill` and a closed terminal all stop everything cleanly (also when started in
    # the background, where SIGINT arrives ignored).
    stop_on_signals()
    with console.status("starting PostgreSQL"):
        urls = database_urls()
    where = f"embedded, data in {settings.data_dir / 'pg'}" if urls.embedded else "DATABASE_URL"
    console.print(f"PostgreSQL: {where}")
    with console.status("applying migrations"):
        migrate(urls.owner)
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
        pharmacy_port = settings.pharmacy_reference_port
        pharmacy_line = "not started (PHARMACY_REFERENCE_PORT=0)"
        if pharmacy_port:
            supervisor.start(
                "pharmacy",
                reference_pharmacy_argv(
                    pharmacy_port, settings.pharmacy_reference_dispense_delay_seconds
                ),
            )
            pharmacy_url = f"http://127.0.0.1:{pharmacy_port}"
            supervisor.wait_http("pharmacy", pharmacy_url + "/metadata")
            configured = ensure_reference_pharmacy(urls.app, pharmacy_url)
            if configured:
                console.print(configured)
            pharmacy_line = f"{pharmacy_url}   (reference FHIR R4 pharmacy, control at /_control/)"
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
        ui_line = "not started (UI_PORT=0)"
        if settings.ui_port:
            # The staff portal signs in at the same provider, as the portal's OIDC client, and
            # reads the marts as the read-only analyst role.
            secrets_file = write_ui_secrets(
                settings.data_dir / "streamlit" / "secrets.toml",
                port=settings.ui_port,
                issuer=issuer,
                client_id=settings.oidc_client_id,
                client_secret=settings.oidc_client_secret,
            )
            analytics_url = with_user(urls.owner, settings.database_analyst_role)
            supervisor.start(
                "staff-portal",
                streamlit_argv(settings.ui_port, secrets_file),
                env={
                    **env,
                    **ui_environment(
                        api, analytics_url, f"http://127.0.0.1:{settings.dagster_port}"
                    ),
                },
            )
            ui = f"http://127.0.0.1:{settings.ui_port}"
            supervisor.wait_http("staff-portal", ui + "/_stcore/health", timeout=90)
            ui_line = f"{ui}   (admins and doctors: sign in as a demo login)"
        # Dagster runs what is scheduled (order expiry, stock alerts, reconciliation, dbt, the
        # lake export) on the same database; its own storage is a database beside the portal's.
        with console.status("parsing the dbt project (dbt parse, offline)"):
            from pipelines.analytics.manifest import ensure_manifest

            ensure_manifest()  # once here, not raced by the UI and the daemon loading at once
        dagster_home = prepare_dagster_home(settings.data_dir / "dagster")
        dagster_env = {
            **env,
            **dagster_environment(dagster_home, dagster_storage_url(urls.owner)),
            "DATA_DIR": str(settings.data_dir.resolve()),
        }
        supervisor.start("dagster-daemon", dagster_daemon_argv(), env=dagster_env)
        supervisor.start(
            "dagster-webserver", dagster_webserver_argv(settings.dagster_port), env=dagster_env
        )
        dagster = f"http://127.0.0.1:{settings.dagster_port}"
        with console.status("starting Dagster (loading the pipelines)"):
            supervisor.wait_http("dagster-webserver", dagster + "/server_info", timeout=180)
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

  Staff portal        {ui_line}
  API docs            {api}/docs   (Authorize, then oidc's Authorize: sign in as a demo login)
  OpenAPI             {api}/openapi.json
  Identity provider   {issuer}   (development stand-in for Okta/Auth0)
  Stripe              {stripe_base}   (local stand-in, webhooks to the API)
  Dagster             {dagster}   (schedules running; DAGSTER_HOME {dagster_home})
  Pharmacy            {pharmacy_line}
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
