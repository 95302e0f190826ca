from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.fixtures.database import TestDatabase, create_database, drop_database
from tests.fixtures.pipelines import pipeline_resources, seed_demo_data


@pytest.fixture(scope="session")
def pipeline_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[TestDatabase]:
    """One committed database with the demo data, shared by the pipeline tests (each test
    asserts on what it changes, not on absolute totals another test may move)."""
    app_engine.dispose()  # the template must be free of sessions to be copied
    database = create_database(pg_server, template=template_db.name)
    seed_demo_data(database)
    yield database
    drop_database(pg_server, database.name)


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake")


@pytest.fixture
def resources(pipeline_db: TestDatabase, lake_dir: Path) -> dict[str, object]:
    return pipeline_resources(pipeline_db, lake_dir)
