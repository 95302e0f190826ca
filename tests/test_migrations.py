"""The migrations are the schema: the models agree with them, and they round-trip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from app.db import sqlalchemy_url
from app.migrations import alembic_config
from app.models import Base
from tests.fixtures.database import TestDatabase, create_database, drop_database


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[TestDatabase]:
    database = create_database(pg_server)
    yield database
    drop_database(pg_server, database.name)


def _diff(url: str) -> list[object]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(diff)


def _tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_models_and_migrations_agree(empty_db: TestDatabase) -> None:
    command.upgrade(alembic_config(empty_db.owner_url), "head")
    assert _diff(empty_db.owner_url) == []


def test_downgrade_then_upgrade_round_trips(empty_db: TestDatabase) -> None:
    config = alembic_config(empty_db.owner_url)
    command.upgrade(config, "head")
    expected = {table.name for table in Base.metadata.sorted_tables}
    assert expected <= _tables(empty_db.owner_url)

    command.downgrade(config, "base")
    assert _tables(empty_db.owner_url) == {"alembic_version"}

    command.upgrade(config, "head")
    assert expected <= _tables(empty_db.owner_url)
    assert _diff(empty_db.owner_url) == []
