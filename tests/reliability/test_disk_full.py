"""Disk full: SQLite's ``PRAGMA max_page_count`` caps the file (a small filesystem without root).
The outbox keeps committing, evicts by its policy (readings before alerts, oldest first), counts
it, and the file stays sound (ARCHITECTURE.md §3.3: "... and a full disk").

SQLITE_FULL rolls the whole transaction back (sqlite.org/rescode.html#full), so the group
committer lets the outbox shrink and writes the same group again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from tests.reliability.conftest import integrity

pytestmark = pytest.mark.timeout(60)


def record(i: int, kind: str) -> Record:
    body: dict[str, Any] = {"id": f"{kind}-{i:06d}", "kind": kind, "data": {"v": i, "pad": "x" * 300}}
    priority = Priority.ALERT if kind == "alert" else Priority.READING
    return Record(record_id=body["id"], kind=kind, priority=priority, body=body)  # type: ignore[arg-type]


async def test_full_disk_evicts_by_policy_and_keeps_committing(tmp_path: Path) -> None:
    db_file = db.db_path(tmp_path)
    database = Database(db_file)
    database.run_sync(lambda c: c.execute("PRAGMA max_page_count = 400"))  # ~1.6 MB of 4 KiB pages
    outbox = Outbox(database, max_bytes=1 << 30)  # the configured bound is not what stops it
    committer = GroupCommitter(database, [outbox], interval_s=0.01, max_pending=200)
    outbox.committer_notify = committer.notify
    task = asyncio.create_task(committer.run())
    try:
        for i in range(40):
            outbox.put(record(i, "alert"))
        for i in range(12_000):  # ~4.5 MB of readings into a 1.6 MB file
            outbox.put(record(i, "reading"))
            if i % 200 == 199:
                await committer.flush()
        await committer.flush()
        outbox.put(record(99_999, "reading"))
        await committer.flush()
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5.0)

    assert committer.disk_full >= 1 and outbox.counters["disk_full"] >= 1
    assert committer.failures == 0, "a group was lost although eviction could make room"
    assert outbox.counters["evicted.reading"] > 5000
    assert outbox.counters.get("evicted.alert", 0) == 0
    stats = await outbox.stats()
    assert stats.evicted_total["evicted.reading"] == outbox.counters["evicted.reading"]
    database.close()

    assert integrity(db_file) == "ok"
    conn = sqlite3.connect(db_file)
    try:
        ids = [r[0] for r in conn.execute("SELECT record_id FROM outbox ORDER BY seq")]
    finally:
        conn.close()
    assert sum(1 for i in ids if i.startswith("alert")) == 40, "alerts are evicted last"
    assert ids[-1] == "reading-099999", "the newest record was accepted"
    readings = [int(i.split("-")[1]) for i in ids if i.startswith("reading")]
    assert readings == sorted(readings) and readings[0] > 5000, "the oldest readings went first"
