from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.fixtures.database import TestDatabase, create_database, drop_database


@pytest.fixture
def fresh_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[TestDatabase]:
    """Like the root `fresh_db`, but first closes the pooled connections to the template.

    `CREATE DATABASE ... TEMPLATE` fails while any session is connected to the template, and
    the session-wide `app_engine` keeps the connections of earlier `db` tests in its pool.
    """
    app_engine.dispose()
    database = create_database(pg_server, template=template_db.name)
    yield database
    drop_database(pg_server, database.name)
