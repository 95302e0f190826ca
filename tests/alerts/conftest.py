"""The alert tests deliver for real, like the notification tests: e-mail to the development SMTP
sink (a real SMTP server on a free loopback port), SMS to the `log` provider's file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.mail_sink import MailSink
from tests.fixtures.settings import settings_env


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[MailSink]:
    """The sink on a free port, the app's SMTP settings pointed at it and SMS to a log file in
    the test's own DATA_DIR."""
    with (
        MailSink(tmp_path / "mail") as sink,
        settings_env(
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(sink.port),
            SMTP_STARTTLS="false",
            DATA_DIR=str(tmp_path),
            SMS_PROVIDER="log",
        ),
    ):
        yield sink
