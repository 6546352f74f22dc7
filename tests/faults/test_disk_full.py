"""A full disk, for real: the data directory on a 16 MiB tmpfs that another file fills, then frees.

docs/outbox.md, "A full disk": a full disk is transient, never a reason to discard. A failed
commit evicts no committed record; the configured bound stays; what cannot be committed waits in
a bounded memory queue (alerts first) and what overflows it is counted; once space is back every
record commits and the backlog drains. The issue's figures before this: with an empty outbox the
byte bound became 48 bytes and 100 of 100 later readings were evicted; with 2,000 committed
records waiting, 3 s of full disk then one commit evicted all 2,000.

The stage tests here drive the real Outbox and GroupCommitter on the real filesystem;
``test_disk_full_agent.py`` does the same against the agent process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.db.reserve import DiskReserve
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from tests.faults.conftest import SmallDisk
from tests.outbox.helpers import ids_in_file

pytestmark = pytest.mark.timeout(120)


def record(i: int, kind: str = "reading") -> Record:
    body: dict[str, Any] = {"id": f"{kind}-{i:06d}", "kind": kind, "data": {"v": i, "pad": "x" * 300}}
    priority = Priority.ALERT if kind == "alert" else Priority.READING
    return Record(record_id=body["id"], kind=kind, priority=priority, body=body)  # type: ignore[arg-type]


class Stage:
    """Database + Outbox + GroupCommitter on ``directory``, wired as gateway.app wires them."""

    def __init__(self, directory: Path, *, reserve_bytes: int = 0, memory_queue_records: int = 5000) -> None:
        self.path = db.db_path(directory)
        self.database = Database(self.path)
        self.reserve = DiskReserve(directory, reserve_bytes)
        self.reserve.ensure()
        self.outbox = Outbox(self.database, memory_queue_records=memory_queue_records)
        self.committer = GroupCommitter(
            self.database, [self.outbox], interval_s=0.01, max_pending=200, reserve=self.reserve
        )
        self.outbox.committer_notify = self.committer.notify

    async def commit(self) -> bool:
        """One group now; False when it failed (its records went back to the memory queue)."""
        try:
            await self.committer.flush()
        except Exception:
            return False
        return True

    async def drain(self, n: int = 500) -> list[str]:
        """Lease and ack everything (as a broker's PUBACKs would), then commit the deletes."""
        delivered: list[str] = []
        while True:
            rows = await self.outbox.lease(n)
            if not rows:
                break
            delivered.extend(r.record_id for r in rows)
            await self.outbox.ack([r.seq for r in rows])
        await self.commit()
        return delivered

    def close(self) -> None:
        self.database.close()


async def test_empty_outbox_then_full_disk_evicts_nothing_later(small_disk: SmallDisk) -> None:
    # The first case, without the reserve's help: an empty outbox meets a full disk.
    stage = Stage(small_disk.path, reserve_bytes=0)
    small_disk.fill()
    for i in range(20):
        stage.outbox.put(record(i))
    assert not await stage.commit(), "the disk is full: the group must fail"
    assert stage.committer.full_since_s is not None
    assert stage.outbox.waiting_in_memory == 20, "the failed group's records wait in memory"
    small_disk.free()
    assert await stage.commit()
    assert stage.committer.full_since_s is None, "space is back: no longer 'full since'"
    for i in range(20, 120):  # the 100 readings after the fault
        stage.outbox.put(record(i))
    assert await stage.commit()
    stats = await stage.outbox.stats()
    assert stats.max_bytes == 256 * 1024 * 1024, "the configured bound is unchanged"
    assert stats.depth == 120 and not stats.evicted_total, stats.evicted_total
    stage.close()
    assert ids_in_file(stage.path) == [f"reading-{i:06d}" for i in range(120)]


async def test_committed_backlog_survives_a_full_disk_and_one_commit(small_disk: SmallDisk) -> None:
    # The second case: 2,000 committed records waiting (broker down), 3 s of full disk,
    # then one successful commit. Before: all 2,000 evicted.
    stage = Stage(small_disk.path, reserve_bytes=0)
    for i in range(2000):
        stage.outbox.put(record(i))
    assert await stage.commit()
    small_disk.fill()
    stage.outbox.put(record(5000))
    assert not await stage.commit()
    await asyncio.sleep(0.2)  # the disk stays full a while (the issue: 3 s; the length changes nothing)
    small_disk.free()
    stage.outbox.put(record(5001))
    assert await stage.commit()
    stats = await stage.outbox.stats()
    assert stats.depth == 2002 and not stats.evicted_total
    assert sorted(await stage.drain()) == sorted([f"reading-{i:06d}" for i in (*range(2000), 5000, 5001)])
    stage.close()


async def test_memory_queue_is_bounded_alerts_first_and_counts_what_it_drops(small_disk: SmallDisk) -> None:
    stage = Stage(small_disk.path, reserve_bytes=0, memory_queue_records=100)
    small_disk.fill()
    for i in range(5):
        stage.outbox.put(record(i, "alert"))
    for i in range(150):
        stage.outbox.put(record(i))
    assert not await stage.commit()
    # Over the bound, the queue is cut to 90 % of it (one sort per cut, not one per put).
    assert stage.outbox.waiting_in_memory == 90
    assert stage.outbox.counters["dropped_uncommitted.reading"] == 65
    assert stage.outbox.counters.get("dropped_uncommitted.alert", 0) == 0
    small_disk.free()
    while stage.outbox.waiting_in_memory:
        assert await stage.commit()
    stage.close()
    ids = ids_in_file(stage.path)
    assert [i for i in ids if i.startswith("alert")] == [f"alert-{i:06d}" for i in range(5)]
    # The oldest readings were dropped: the newest 85 are kept.
    assert [i for i in ids if i.startswith("reading")] == [f"reading-{i:06d}" for i in range(65, 150)]


async def test_reserve_lets_alerts_commit_and_acks_free_space_on_a_full_disk(small_disk: SmallDisk) -> None:
    # A disk that fills and stays full: the reserve is given up at the first failed group, the
    # records commit into its room, the acknowledged backlog frees pages; nothing is evicted.
    stage = Stage(small_disk.path, reserve_bytes=1 << 20)
    assert stage.reserve.held
    for i in range(3000):
        stage.outbox.put(record(i))
    assert await stage.commit()
    small_disk.fill()  # the reserve is still held: everything else is taken
    for i in range(10):
        stage.outbox.put(record(i, "alert"))
    assert await stage.commit(), "the WAL's own blocks or the reserve's room take the alerts"
    small_disk.fill()  # and another program takes whatever the reserve gave back
    delivered = await stage.drain()  # the broker acknowledges the backlog: deletes on a full disk
    assert len(delivered) == 3010
    for i in range(3000, 3300):  # the freed pages take new readings, disk still full
        stage.outbox.put(record(i))
    ok = await stage.commit()
    stats = await stage.outbox.stats()
    assert not stats.evicted_total
    assert ok, f"acknowledged rows did not free room: {stage.committer.last_error}"
    small_disk.free()
    stage.close()
    assert ids_in_file(stage.path) == [f"reading-{i:06d}" for i in range(3000, 3300)]


async def test_reserve_comes_back_once_there_is_room(small_disk: SmallDisk, monkeypatch: Any) -> None:
    monkeypatch.setattr("gateway.db.commit.RESERVE_CHECK_S", 0.0)
    stage = Stage(small_disk.path, reserve_bytes=1 << 20)
    small_disk.fill()
    stage.outbox.put(record(1, "alert"))
    assert await stage.commit()
    assert not stage.reserve.held
    stage.outbox.put(record(2))
    await stage.commit()
    assert not stage.reserve.held, "no room yet: the reserve is not written into a full disk"
    small_disk.free()
    stage.outbox.put(record(3))
    assert await stage.commit()
    assert stage.reserve.held, "space is back: the reserve is held again for the next full disk"
    stage.close()


async def test_a_quarantined_row_survives_a_full_disk(small_disk: SmallDisk) -> None:
    # The review's case: the quarantine's DELETE rode along with the acked deletes that a full
    # disk commits on their own; the row vanished before its copy into outbox_quarantine.
    stage = Stage(small_disk.path, reserve_bytes=1 << 20)
    for i in range(50):
        stage.outbox.put(record(i))
    assert await stage.commit()
    leased = await stage.outbox.lease(5)
    stage.outbox.quarantine([leased[0].seq], "too_large")
    await stage.outbox.ack([row.seq for row in leased[1:]])
    small_disk.fill()
    for i in range(100, 2100):
        stage.outbox.put(record(i))
    await stage.commit()
    small_disk.free()
    while stage.outbox.waiting_in_memory or not await stage.commit():
        await stage.commit()
    stage.close()
    conn = sqlite3.connect(stage.path)
    try:
        quarantined = [r[0] for r in conn.execute("SELECT record_id FROM outbox_quarantine")]
    finally:
        conn.close()
    assert quarantined == [leased[0].record_id]
    ids = set(ids_in_file(stage.path))
    assert leased[0].record_id not in ids
    expected = {f"reading-{i:06d}" for i in (*range(50), *range(100, 2100))} - {r.record_id for r in leased}
    assert ids == expected, f"{len(expected - ids)} committed or accepted records lost"


async def test_the_memory_queue_clears_in_a_few_growing_groups_once_space_is_back(
    small_disk: SmallDisk,
) -> None:
    stage = Stage(small_disk.path, reserve_bytes=0)
    small_disk.fill()
    for i in range(1000):
        stage.outbox.put(record(i))
    assert not await stage.commit()
    small_disk.free()
    groups = 0
    while stage.outbox.waiting_in_memory:
        assert await stage.commit()
        groups += 1
    assert groups <= 3, f"{groups} groups for 1,000 waiting records (200, then doubling)"
    for i in range(1000, 7000):  # a burst on a writable disk after the episode: never cut
        stage.outbox.put(record(i))
    assert stage.outbox.waiting_in_memory == 6000
    assert not any(k.startswith("dropped_uncommitted") for k in stage.outbox.counters)
    assert await stage.commit()
    stage.close()
    assert len(ids_in_file(stage.path)) == 7000


class BrokenSink:
    """A sink whose ``committed`` raises after its write is durable: a stage's bug."""

    def __init__(self) -> None:
        self.pending = False

    def take(self) -> object | None:
        if not self.pending:
            return None
        self.pending = False
        return object()

    def write(self, conn: sqlite3.Connection, taken: object) -> None:
        pass

    def committed(self, taken: object) -> None:
        raise RuntimeError("a stage's bug")


async def test_a_sink_that_raises_after_commit_does_not_stop_the_others(tmp_path: Path) -> None:
    database = Database(db.db_path(tmp_path))
    broken = BrokenSink()
    outbox = Outbox(database)
    committer = GroupCommitter(database, [broken, outbox], interval_s=0.01, max_pending=100)
    outbox.committer_notify = committer.notify
    task = asyncio.create_task(committer.run())
    try:
        broken.pending = True
        outbox.put(record(1))
        await asyncio.sleep(0.3)
        assert not task.done(), "the commit task died"
        assert outbox.depth == 1, "the outbox's bookkeeping after the commit was skipped"
        outbox.put(record(2))
        await asyncio.sleep(0.3)
        assert outbox.depth == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        database.close()
