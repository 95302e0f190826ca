"""Logs never hold a patient's details: errors are provoked with recognisable values through
a real server, the worker and the `portal` command, then every log file is searched for them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import httpx
import psycopg

from app.catalog.schemas import ProductCreate
from app.patients.schemas import PatientCreate
from tests.fixtures.cli import PORTAL, portal_env
from tests.fixtures.database import TestDatabase
from tests.fixtures.identity import AUDIENCE, JwtIssuer
from tests.fixtures.live_api import (
    PRIVATE_PREFIXES,
    PROJECT_ROOT,
    free_port,
    stop,
    wait_until_up,
)
from tests.fixtures.stock import seed_stock

PERSON = {
    "name": "Zebulon Quixote",
    "email": "zebulon.quixote@example.com",
    "phone": "+1 555 0177",
    "date_of_birth": "1961-02-03",
}
# Every spelling in which those values could reach a log line.
NEEDLES = [
    "Zebulon",
    "Quixote",
    "zebulon.quixote@example.com",
    "zebulon.quixote%40example.com",
    "555 0177",
    "5550177",
    "1961-02-03",
    "1961, 2, 3",
    "2961-02-03",
    "2961, 2, 3",
]

# The API as `portal serve` runs each worker process, on the application with the test routes.
SERVE = (
    "import sys; from app.server import serve_one; "
    "serve_one('127.0.0.1', int(sys.argv[1]), access_log=True, app=sys.argv[2])"
)

# A `portal` command that fails with the patient's details in its exception and its locals.
FAILING_COMMAND = """
import sys
from app import cli
from app.patients.schemas import PatientCreate

@cli.cli.command("fail-with-phi")
def fail_with_phi() -> None:
    person = {"name": "Zebulon Quixote", "email": "zebulon.quixote@example.com",
              "phone": "+1 555 0177", "date_of_birth": "2961-02-03"}
    PatientCreate.model_validate(person)

sys.argv = ["portal", "fail-with-phi"]
cli.main()
"""


def _leaks(log_dir: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(p for p in log_dir.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace").lower()
        found += [(path.name, needle) for needle in NEEDLES if needle.lower() in text]
    return found


def test_errors_with_patient_details_leave_no_trace_in_any_log(
    fresh_db: TestDatabase, jwt_issuer: JwtIssuer, tmp_path: Path
) -> None:
    stocked = seed_stock(
        fresh_db,
        doctor_subject="logs-doctor",
        doctor_email="logs-doctor@clinic.example",
        patient=PatientCreate(
            name="Olive Seed",
            email="olive.seed@example.com",
            phone="+1 555 0100",
            date_of_birth=date(1970, 1, 1),
        ),
        product=ProductCreate(
            sku=f"LOG-{uuid.uuid4().hex[:8]}", name="Saline spray", price_cents=900
        ),
        lots=[("LOG-LOT-1", 365, 10)],
    )
    data_dir = tmp_path / "data"
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    env.update(
        ENVIRONMENT="test",
        DATA_DIR=str(data_dir),
        DATABASE_URL=fresh_db.app_url,
        OIDC_ISSUER=jwt_issuer.url,
        OIDC_AUDIENCE=AUDIENCE,
        PUBLIC_BASE_URL=base,
        SMTP_PORT=str(free_port()),  # nothing listens: e-mail deliveries fail and are retried
    )
    with (log_dir / "api.log").open("w") as api_log:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port), "tests.logs.phi_app:create_app"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(server, base + "/healthz", log_dir / "api.log")
            # A connection per request: the server drops one on which a request failed.
            fresh = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(base_url=base, timeout=30, limits=fresh) as http:
                # The public self-order: a date of birth in the future (refused by validation:
                # its 422 names the field, never the value), then a valid one (which queues the
                # payment link e-mail to the patient for the worker).
                future = {**PERSON, "date_of_birth": "2961-02-03"}
                line = {"product_id": str(stocked.product_id), "quantity": 1}
                refused = http.post("/api/v1/public/orders", json={**future, "items": [line]})
                assert refused.status_code == 422, refused.text
                assert "2961" not in refused.text
                placed = http.post("/api/v1/public/orders", json={**PERSON, "items": [line]})
                assert placed.status_code == 201, placed.text
                # PHI in a query string (access log) and in refused bodies.
                http.get("/api/v1/patients", params={"email": PERSON["email"]})
                http.post("/api/v1/public/orders", json={**PERSON, "items": []})
                # Unhandled exceptions whose text and causes carry the values.
                for route in ("validation-error", "model-error", "runtime-error"):
                    failed = http.post(f"/test/{route}", json=PERSON)
                    assert failed.status_code == 500
                    assert "Zebulon" not in failed.text
                assert http.post("/test/log-line", json=PERSON).status_code == 200
        finally:
            stop(server)

    worker_env = portal_env(fresh_db, **{k: env[k] for k in ("DATA_DIR", "SMTP_PORT")})
    with (log_dir / "worker.log").open("w") as worker_log:
        worker = subprocess.run(
            [PORTAL, "worker", "--once"],
            env=worker_env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    assert worker.returncode == 0, (log_dir / "worker.log").read_text()
    with (log_dir / "command.log").open("w") as command_log:
        command = subprocess.run(
            [sys.executable, "-c", FAILING_COMMAND],
            cwd=PROJECT_ROOT,
            env=worker_env,
            stdout=command_log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    assert command.returncode == 1

    api = (log_dir / "api.log").read_text()
    # The errors were logged, with what an engineer needs to find them...
    assert api.count("Traceback (most recent call last)") >= 3, api
    assert "ValidationError" in api and "RuntimeError" in api and "LookupError" in api
    assert "POST /test/runtime-error" in api and "GET /api/v1/patients" in api
    assert "self-order refused for" in api
    assert "unhandled RuntimeError in POST /test/runtime-error (request " in api
    assert "unhandled ValidationError in POST /test/model-error (request " in api
    assert "outbox: 0 delivered" in (log_dir / "worker.log").read_text()
    assert "ValidationError" in (log_dir / "command.log").read_text()
    # ...and none of the patient's details, in any file.
    assert _leaks(log_dir) == []
    # The same warnings and errors went to the system log admins read, as redacted.
    with psycopg.connect(fresh_db.owner_url) as conn:
        kept = conn.execute(
            "SELECT source, level, logger, message, coalesce(exception, '') FROM system_log"
        ).fetchall()
    messages = [(source, level, message) for source, level, _, message, _ in kept]
    assert any(
        source == "api"
        and level == "ERROR"
        and message.startswith("unhandled RuntimeError in POST /test/runtime-error (request ")
        for source, level, message in messages
    ), messages
    # uvicorn's record of the same failure carries the traceback, its causes included.
    assert any("LookupError" in exception for *_, exception in kept)
    text = "\n".join(" ".join(row) for row in kept).lower()
    assert [needle for needle in NEEDLES if needle.lower() in text] == []
