"""One live stack for every staff portal test of this package: the development identity
provider, the API and the Streamlit server (tests/fixtures/portal_ui.py), on a database of its
own holding the small analytics history of tests/fixtures/analytics.py with the dbt marts built
from it (so the analytics pages have numbers the tests know). Tests add their own rows through
the API with unique names, so they do not depend on each other."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.db import with_user
from tests.fixtures.analytics import History, database_with_history, dbt_output, run_dbt_for
from tests.fixtures.database import TestDatabase
from tests.fixtures.portal_ui import PortalUiStack, portal_ui_stack

ANALYST_ROLE = "portal_analyst"


@pytest.fixture(scope="package")
def history_db(
    pg_server: str, template_db: TestDatabase, app_engine: Engine
) -> Iterator[tuple[TestDatabase, History]]:
    yield from database_with_history(pg_server, template_db, app_engine)


@pytest.fixture(scope="package")
def portal_stack(
    history_db: tuple[TestDatabase, History], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalUiStack]:
    database, history = history_db
    work = tmp_path_factory.mktemp("portal-ui")
    # dbt builds the marts while the servers start (they need none of it to start).
    with ThreadPoolExecutor(max_workers=1) as background:
        building = background.submit(
            run_dbt_for, database, work / "dbt", "run", as_of=history.today
        )
        with portal_ui_stack(
            database, work / "logs", analytics_url=with_user(database.owner_url, ANALYST_ROLE)
        ) as stack:
            built = building.result()
            assert built.returncode == 0, dbt_output(built)
            yield stack


@pytest.fixture(scope="package")
def history(history_db: tuple[TestDatabase, History]) -> History:
    return history_db[1]


@pytest.fixture(scope="package")
def artifacts() -> Path:
    from tests.fixtures.portal_ui import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
