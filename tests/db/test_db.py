"""The database file: created private, migrated once, a newer schema refused; group commit semantics."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.errors import StorageError


def test_new_database_is_private_and_at_current_schema(tmp_path: Path) -> None:
    path = db.db_path(tmp_path / "data")
    conn = db.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"devices", "sessions", "outbox"} <= tables
    conn.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Reopening does not migrate again (it would fail on CREATE TABLE).
    db.connect(path).close()


def test_newer_schema_is_refused_not_downgraded(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)
    conn = db.connect(path)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="refusing to downgrade"):
        db.connect(path)


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError):
        db.connect(blocker / "sub" / "edgegw.sqlite")


class ListSink:
    """A CommitSink writing integers into a table of its own."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.durable: list[int] = []

    def take(self) -> list[int] | None:
        taken, self.pending = self.pending, []
        return taken or None

    def write(self, conn: sqlite3.Connection, taken: list[int]) -> None:
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in taken])

    def committed(self, taken: list[int]) -> None:
        self.durable.extend(taken)


async def test_group_commit_bounds_time_and_count(tmp_path: Path) -> None:
    database = Database(db.db_path(tmp_path))
    database.run_sync(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
    sink = ListSink()
    committer = GroupCommitter(database, [sink], interval_s=0.2, max_pending=5)
    task = asyncio.create_task(committer.run())
    try:
        sink.pending.append(1)
        committer.notify()
        await asyncio.sleep(0.05)
        assert sink.durable == []  # waits for the interval...
        await asyncio.sleep(0.3)
        assert sink.durable == [1]  # ...then commits
        sink.pending.extend(range(2, 7))
        committer.notify(5)  # max_pending reached: commits without waiting the interval
        await asyncio.sleep(0.05)
        assert sink.durable == [1, 2, 3, 4, 5, 6]
        sink.pending.append(7)
        committer.notify(urgent=True)
        await asyncio.sleep(0.05)
        assert sink.durable[-1] == 7
        count: Any = await database.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0])
        assert count == 7
        assert committer.commits == 3
    finally:
        task.cancel()
        database.close()
