"""The `portal` command line, run as a new user would: a subprocess with only environment."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.fixtures.cli import PORTAL, portal_env, run_portal
from tests.fixtures.database import TestDatabase, drop_database
from tests.fixtures.live_api import free_port as _free_port


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def test_seed_demo_is_idempotent(fresh_db: TestDatabase) -> None:
    first = run_portal(fresh_db, "seed", "demo")
    assert first.returncode == 0, first.stderr
    counts = {
        t: _count(fresh_db.owner_url, t) for t in ("products", "lots", "stock_movements", "users")
    }
    assert counts["products"] >= 10 and counts["lots"] >= 10 and counts["users"] == 2
    # A lived-in portal: a few patients, and orders in every state.
    assert _count(fresh_db.owner_url, "patients") >= 3
    with psycopg.connect(fresh_db.owner_url) as conn:
        statuses = {row[0] for row in conn.execute("SELECT DISTINCT status FROM orders")}
    assert statuses == {"pending", "paid", "fulfilled", "cancelled"}
    counts.update(patients=_count(fresh_db.owner_url, "patients"))
    counts.update(orders=_count(fresh_db.owner_url, "orders"))

    second = run_portal(fresh_db, "seed", "demo")
    assert second.returncode == 0, second.stderr
    assert "0 products added" in second.stdout
    assert {t: _count(fresh_db.owner_url, t) for t in counts} == counts


def test_seed_scale_loads_rows_with_their_ledger(fresh_db: TestDatabase) -> None:
    result = run_portal(fresh_db, "seed", "scale", "--products", "200", "--lots", "3000")
    assert result.returncode == 0, result.stderr
    assert "rows/s" in result.stdout
    assert _count(fresh_db.owner_url, "products") == 200
    assert _count(fresh_db.owner_url, "lots") == 3000
    with psycopg.connect(fresh_db.owner_url) as conn:
        disagreeing = conn.execute(
            """SELECT count(*) FROM lots l
               WHERE l.quantity_on_hand <> (SELECT sum(delta_on_hand) FROM stock_movements m
                                            WHERE m.lot_id = l.id)"""
        ).fetchone()
    assert disagreeing == (0,)


def test_audit_verify_reports_intact_and_broken_chain(fresh_db: TestDatabase) -> None:
    assert run_portal(fresh_db, "seed", "demo").returncode == 0
    intact = run_portal(fresh_db, "audit", "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout

    with psycopg.connect(fresh_db.owner_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit_log SET actor_subject = 'someone-else' WHERE seq = 3")
    broken = run_portal(fresh_db, "audit", "verify")
    assert broken.returncode == 1
    assert "row 3" in broken.stdout


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { jobs { name } } } } } } } }"""


def test_portal_up_serves_the_api_and_stops_everything_on_ctrl_c(
    fresh_db: TestDatabase, tmp_path: Path
) -> None:
    api_port, idp_port, stripe_port = _free_port(), _free_port(), _free_port()
    smtp_port, dagster_port, ui_port = _free_port(), _free_port(), _free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    stripe_base = f"http://127.0.0.1:{stripe_port}"
    pharmacy_port = _free_port()  # the reference pharmacy
    process = subprocess.Popen(
        [PORTAL, "up", "--api-port", str(api_port)],
        env=portal_env(
            fresh_db,
            OIDC_ISSUER=issuer,
            OIDC_AUDIENCE="portal-dev",
            PHARMACY_REFERENCE_PORT=str(pharmacy_port),
            STRIPE_API_BASE=stripe_base,
            DATA_DIR=str(tmp_path),
            SMTP_PORT=str(smtp_port),
            DAGSTER_PORT=str(dagster_port),
            UI_PORT=str(ui_port),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{api_port}"
    ui = f"http://127.0.0.1:{ui_port}"
    try:
        # Generous: on a busy 2-core machine the stand-ins, migrations and demo data come first.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(api + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert httpx.get(api + "/docs").status_code == 200
        assert httpx.get(stripe_base + "/js.stripe.com/v3/").status_code == 200
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:  # the mail sink
            assert smtp.noop()[0] == 250
        pharmacy = f"http://127.0.0.1:{pharmacy_port}"
        assert httpx.get(pharmacy + "/metadata").json()["fhirVersion"] == "4.0.1"

        token = run_portal(fresh_db, "dev-token", "--role", "admin", OIDC_ISSUER=issuer)
        assert token.returncode == 0, token.stdout + token.stderr
        headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
        created = httpx.post(
            api + "/api/v1/products",
            headers=headers,
            json={"sku": "CLI-UP-1", "name": "Gloves", "price_cents": 1200},
        )
        assert created.status_code == 201, created.text
        lot = httpx.post(
            f"{api}/api/v1/products/{created.json()['id']}/lots",
            headers=headers,
            json={"lot_number": "G-1", "quantity": 10},
        )
        assert lot.status_code == 201, lot.text

        # An invitation is claimed only by a token whose e-mail the provider has verified.
        boss = "boss@clinicmail.org"
        invited = httpx.post(
            api + "/api/v1/users", headers=headers, json={"email": boss, "role": "admin"}
        )
        assert invited.status_code == 201, invited.text
        for flag, status in (("--email-unverified", 403), ("--email-verified", 200)):
            doctor = run_portal(
                fresh_db,
                "dev-token",
                "--role",
                "doctor",
                "--email",
                boss,
                flag,
                OIDC_ISSUER=issuer,
            )
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            me = httpx.get(
                api + "/api/v1/users/me",
                headers={"Authorization": f"Bearer {doctor.stdout.strip()}"},
            )
            assert me.status_code == status, me.text
        assert me.json()["role"] == "admin"

        # Dagster's UI comes up last (it loads the pipelines); the banner follows it.
        dagster = f"http://127.0.0.1:{dagster_port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(dagster + "/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert httpx.get(dagster + "/server_info", timeout=5).status_code == 200
        # The staff portal (Streamlit) was started and answering before Dagster.
        assert httpx.get(ui + "/_stcore/health", timeout=5).status_code == 200
        # It serves the portal's code location, loaded without error (workspace.yaml).
        answer = httpx.post(dagster + "/graphql", json={"query": LOCATIONS}, timeout=60).json()
        (entry,) = answer["data"]["workspaceOrError"]["locationEntries"]
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        jobs = {job["name"] for repo in location["repositories"] for job in repo["jobs"]}
        assert {"expire_unpaid_orders_job", "stock_alerts_job", "analytics_build"} <= jobs
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        drop_database(fresh_db.owner_url, fresh_db.name + "_dagster")  # Dagster's storage
    assert "http://127.0.0.1:" in output and "admin@demo.clinic" in output
    assert str(tmp_path / "mail") in output
    assert dagster in output and str(tmp_path / "dagster") in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(dagster + "/server_info", timeout=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(api + "/healthz", timeout=1)
    assert ui in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(ui + "/_stcore/health", timeout=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(issuer + "/.well-known/openid-configuration", timeout=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(stripe_base + "/js.stripe.com/v3/", timeout=1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", smtp_port), timeout=1)
    assert f"http://127.0.0.1:{pharmacy_port}" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{pharmacy_port}/metadata", timeout=1)
