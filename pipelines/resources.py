"""The resources every pipeline uses, chosen per environment in ONE place (`build_resources`).

The pipelines are plain functions over these; they never read settings themselves. Everything
comes from the portal's own settings (app/config.py), so Dagster talks to the same database,
Stripe account and outbox as the API and the worker:

- `database`: the embedded PostgreSQL (`portal up`), a test's own database, DATABASE_URL and
  DATABASE_MIGRATION_URL in production;
- `stripe`: the local stand-in (localstripe) in development and tests, Stripe in production;
- `notifier`: the notifications outbox, delivered by `portal worker` (SMTP sink and SMS log in
  development, SMTP/SES and Twilio in production);
- `lake`: LAKE_URL, by default DATA_DIR/lake (S3 in production);
- `dbt`: the dbt project of dbt/ on the schema owner's URL.

Whether schedules start on their own is pipelines/scheduling.py's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import stripe
from pydantic import PrivateAttr
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.analytics.lake import Lake
from app.config import Settings, get_settings
from app.db import make_engine


class NotConfigured(RuntimeError):
    pass


class PortalDatabase(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The portal's PostgreSQL: sessions as the application role (flows), and the schema
    owner's URL for dbt and the exports (the `analytics` schema is the owner's)."""

    app_url: str = ""
    owner_url: str = ""

    _engine: Engine | None = PrivateAttr(default=None)

    def _require(self, url: str, name: str) -> str:
        if not url:
            raise NotConfigured(f"{name} is not set (run Dagster through `portal up`, or set it)")
        return url

    @property
    def owner(self) -> str:
        return self._require(self.owner_url or self.app_url, "DATABASE_MIGRATION_URL")

    def sessions(self) -> sessionmaker[Session]:
        """Sessions as the application role; objects stay readable after their commit."""
        if self._engine is None:
            url = self._require(self.app_url, "DATABASE_URL")
            self._engine = make_engine(url, pool_size=2)
        return sessionmaker(self._engine, expire_on_commit=False)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class StripeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Stripe through the portal's client (app/integrations/stripe/client.py); `api_base`
    points a run at another Stripe (the tests' localstripe)."""

    api_key: str = ""
    api_base: str = ""

    def client(self) -> stripe.StripeClient:
        from app.integrations.stripe.client import stripe_client

        if not self.api_key and not self.api_base:
            return stripe_client()
        settings = get_settings()
        base = self.api_base or settings.stripe_api_base
        return stripe.StripeClient(
            self.api_key or settings.stripe_api_key,
            base_addresses={"api": base} if base else {},
            max_network_retries=2,
        )


class OutboxNotifier(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Alerts reach people through the notifications outbox: the flows queue e-mail and SMS in
    their own transaction and `portal worker` delivers them (the low-latency path, with its
    retries). A run reports what is waiting there, so an operator sees a stopped worker."""

    def waiting(self, session: Session) -> int:
        """E-mail and SMS messages not delivered yet (pending or retrying)."""
        from app.models import OutboxMessage
        from app.models.status import OutboxStatus
        from app.notifications.service import EMAIL_TOPIC, SMS_TOPIC

        return int(
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.topic.in_([EMAIL_TOPIC, SMS_TOPIC]),
                    OutboxMessage.status == OutboxStatus.PENDING,
                )
            )
            or 0
        )


class LakeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the marts are exported as Parquet: a folder or `s3://bucket/prefix`."""

    url: str

    def lake(self) -> Lake:
        return Lake.at(self.url)


def dbt_executable() -> str:
    """The `dbt` of this environment (beside the running Python), else the one on PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in this process's environment for the block (dbt's profile reads its
    connection from there, also in dagster-dbt's own adapter), then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """The resources of this environment, by the names the pipelines ask for."""
    settings = settings or get_settings()
    app_url = settings.database_url or ""
    resources: dict[str, object] = {
        "database": PortalDatabase(
            app_url=app_url, owner_url=settings.database_migration_url or app_url
        ),
        "stripe": StripeResource(),
        "notifier": OutboxNotifier(),
        "lake": LakeResource(url=settings.lake),
    }
    resources.update(dbt_resources())
    return resources


def dbt_resources() -> dict[str, object]:
    from dagster_dbt import DbtCliResource

    from pipelines.dbt_project import DBT_PROFILES_DIR, DBT_PROJECT_DIR

    return {
        "dbt": DbtCliResource(
            project_dir=os.fspath(DBT_PROJECT_DIR),
            profiles_dir=os.fspath(DBT_PROFILES_DIR),
            dbt_executable=dbt_executable(),
        )
    }
