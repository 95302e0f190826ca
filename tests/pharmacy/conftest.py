"""The pharmacy tests: delivery runs on the test's own connection (their commits are
savepoints, rolled back with the test), against the scripted test double."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.pharmacy_double import pharmacy_double

__all__ = ["pharmacy_double"]


@pytest.fixture
def sessions(db: Session) -> sessionmaker[Session]:
    return sessionmaker(
        bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )
