"""`portal worker` delivers notifications: run as a new user would, against a committed database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import make_engine
from app.models import OutboxMessage
from app.notifications.service import queue_email, queue_sms
from app.notifications.templates import order_reference
from devtools.mail_sink import MailSink
from tests.fixtures.database import TestDatabase

PORTAL = str(Path(sys.executable).parent / "portal")


def test_portal_worker_delivers_email_and_sms(fresh_db: TestDatabase, tmp_path: Path) -> None:
    order_id = uuid.uuid4()
    context = {"order_reference": order_reference(order_id), "refunded": "no"}
    engine = make_engine(fresh_db.app_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            email_key = queue_email(
                session,
                to="pat@example.com",
                template="order_cancelled",
                context=context,
                dedupe_key=f"cancelled-{order_id}",
            )
            sms_key = queue_sms(
                session,
                to="+44 20 7946 0958",
                template="order_cancelled",
                context=context,
                dedupe_key=f"cancelled-{order_id}",
            )

        with MailSink(tmp_path / "mail") as sink:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATABASE_", "SMTP_", "SMS_"))
            }
            env.update(
                DATABASE_URL=fresh_db.app_url,
                SMTP_PORT=str(sink.port),
                DATA_DIR=str(tmp_path),
            )
            result = subprocess.run(
                [PORTAL, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert "2 delivered" in result.stdout
            (mail,) = sink.messages()

        assert b"To: pat@example.com" in mail.read_bytes()
        (sms,) = (tmp_path / "sms.log").read_text().splitlines()
        assert json.loads(sms)["to"] == "+442079460958"
        with Session(engine) as session:
            rows = session.execute(
                select(OutboxMessage.dedupe_key, OutboxMessage.status).where(
                    OutboxMessage.dedupe_key.in_([email_key, sms_key])
                )
            )
            statuses = {key: status for key, status in rows}
        assert statuses == {email_key: "delivered", sms_key: "delivered"}
    finally:
        engine.dispose()
