"""The outbox tests' database: one real SQLite file per test, on the agent's database thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.db.commit import Database


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return db.db_path(tmp_path)


@pytest.fixture
def database(db_file: Path) -> Iterator[Database]:
    database = Database(db_file)
    yield database
    database.close()
