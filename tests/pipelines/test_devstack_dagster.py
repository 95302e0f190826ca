"""The Dagster pieces of `portal up`: DAGSTER_HOME's dagster.yaml is a valid instance whose run,
event and schedule storage is a database of its own on the portal's PostgreSQL. (That `portal
up` starts the UI on it, serving the portal's code location, and stops it on Ctrl-C is
tests/test_cli.py's `portal up` test.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.devstack import (
    dagster_database,
    dagster_environment,
    dagster_storage_url,
    prepare_dagster_home,
)
from tests.fixtures.database import drop_database


@pytest.fixture
def dagster_env(pg_server: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A DAGSTER_HOME as `portal up` writes it, on a storage database of this test's own
    (the development stack's is `portal_dagster`)."""
    database = f"dagster_test_{uuid.uuid4().hex[:10]}"
    home = prepare_dagster_home(tmp_path / "dagster")
    yield dagster_environment(home, dagster_storage_url(pg_server, database))
    drop_database(pg_server, database)


def test_dagster_yaml_keeps_everything_in_postgresql_without_telemetry(tmp_path: Path) -> None:
    home = prepare_dagster_home(tmp_path / "dagster")
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_STORAGE_URL"}}}
    assert config["telemetry"] == {"enabled": False}
    assert config["concurrency"] == {"runs": {"max_concurrent_runs": 3}}
    assert dagster_database("postgresql://postgres@/portal?host=/sock") == "portal_dagster"


def test_the_storage_database_is_created_and_dagster_stores_runs_in_it(
    dagster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert dagster_env["DAGSTER_STORAGE_URL"].startswith("postgresql+psycopg2://")
    for name, value in dagster_env.items():
        monkeypatch.setenv(name, value)

    @dg.op
    def hello() -> int:
        return 1

    @dg.job
    def probe() -> None:
        hello()

    with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 3
        result = probe.execute_in_process(instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.is_success
        assert instance.all_logs(result.run_id)  # events went through NOTIFY
