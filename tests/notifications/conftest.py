"""Notification tests deliver for real: e-mail to the development SMTP sink (a real SMTP server
on a free loopback port), SMS to the `log` provider's file."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import OutboxMessage
from app.notifications.service import HANDLERS
from app.outbox import service as outbox
from devtools.mail_sink import MailSink


@contextmanager
def settings_env(**values: str) -> Iterator[None]:
    """Environment variables the app's settings read, restored (and re-read) afterwards."""
    from app.config import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()  # once more with the environment restored


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """DATA_DIR of the test's own (the SMS log lives there)."""
    with settings_env(DATA_DIR=str(tmp_path), SMS_PROVIDER="log"):
        yield tmp_path


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[MailSink]:
    """The development SMTP sink on a free port; the app's SMTP settings point at it."""
    with (
        MailSink(tmp_path / "mail") as sink,
        settings_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port), SMTP_STARTTLS="false"),
    ):
        yield sink


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sessions(db: Session) -> sessionmaker[Session]:
    """Sessions for `deliver_due` on the test's connection: their commits are savepoints, so
    everything is still rolled back after the test."""
    return sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


def deliver(
    db: Session,
    sessions: sessionmaker[Session],
    handlers: dict[str, outbox.Handler] | None = None,
) -> outbox.DeliveryReport:
    """A worker's run over the notification topics, after the test's session committed."""
    db.commit()
    return outbox.deliver_due(sessions, handlers or HANDLERS)


def outbox_row(db: Session, key: str) -> OutboxMessage:
    db.expire_all()
    row = db.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == key))
    assert row is not None
    return row
