"""Notification tests deliver for real: e-mail to the development SMTP sink (a real SMTP server
on a free loopback port), SMS to the `log` provider's file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.mail_sink import MailSink
from tests.fixtures.settings import settings_env


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
