"""The durable outbox over a real SQLite file: commit, lease, ack, release, restart.

Behaviour under test is ARCHITECTURE.md §3.3 (a record is accepted when its group
commit returned; it is deleted only after the broker's PUBACK; it survives a
restart) and §3.4 (the same frame, i.e. the same record id, is stored once).
Record bodies follow the record shape of §3.2; their values are made up.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.db.commit import Database, GroupCommitter
from gateway.errors import StorageError
from gateway.messages import Record, RecordKind
from gateway.outbox import Outbox
from gateway.outbox.store import ROW_OVERHEAD_BYTES
from tests.outbox.helpers import committed_outbox, ids_in_file


def make_record(i: int, kind: RecordKind = "reading") -> Record:
    body: dict[str, Any] = {
        "id": f"0004a30b001c{i:04x}-s1-{i:08x}",
        "kind": kind,
        "dev_eui": f"0004a30b001c{i:04x}",
        "profile": "acme/noise-1",
        "received_at": "2024-05-01T12:00:00.000Z",
        "time_quality": "ntp",
        "fcnt": i,
        "fport": 2,
        "rx": {
            "rssi_dbm": -97.0,
            "snr_db": 7.5,
            "freq_hz": 868100000,
            "sf": 7,
            "bw_hz": 125000,
            "backend": "semtech-udp",
            "gateway_eui": "b827ebfffe000001",
        },
        "data": {"laeq_db": 55.5 + i % 10, "note": "é"},
        "raw": "0102",
    }
    return Record(record_id=body["id"], kind=kind, priority=2 if kind == "alert" else 0, body=body)


async def test_put_is_pending_until_the_group_commit(database: Database, db_file: Path) -> None:
    outbox, committer = committed_outbox(database)
    for i in range(3):
        outbox.put(make_record(i))

    assert ids_in_file(db_file) == []
    assert (await outbox.stats()).depth == 0
    assert await outbox.lease(10) == []

    await committer.flush()

    assert ids_in_file(db_file) == [make_record(i).record_id for i in range(3)]
    assert (await outbox.stats()).depth == 3
    assert outbox.counters["put"] == 3
    assert outbox.counters["committed"] == 3


async def test_body_is_stored_as_compact_json(database: Database) -> None:
    outbox, committer = committed_outbox(database)
    record = make_record(7)
    outbox.put(record)
    await committer.flush()

    (leased,) = await outbox.lease(1)

    assert leased.record_id == record.record_id
    assert leased.body_json == json.dumps(record.body, separators=(",", ":"))
    assert json.loads(leased.body_json) == record.body


async def test_lease_hands_out_oldest_first_and_never_twice(database: Database) -> None:
    outbox, committer = committed_outbox(database)
    for i in range(10):
        outbox.put(make_record(i))
    await committer.flush()

    first = await outbox.lease(4)
    second = await outbox.lease(4)
    third = await outbox.lease(4)

    ids = [item.record_id for item in first + second + third]
    assert ids == [make_record(i).record_id for i in range(10)]
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    seqs = [item.seq for item in first + second + third]
    assert seqs == sorted(seqs)
    assert await outbox.lease(4) == []
    assert outbox.leased_count == 10


async def test_released_rows_are_leased_again_next(database: Database) -> None:
    outbox, committer = committed_outbox(database)
    for i in range(8):
        outbox.put(make_record(i))
    await committer.flush()
    first = await outbox.lease(5)

    outbox.release([first[1].seq, first[3].seq])
    again = await outbox.lease(3)

    assert [item.record_id for item in again] == [
        first[1].record_id,
        first[3].record_id,
        make_record(5).record_id,
    ]
    assert outbox.counters["released"] == 2
    # Releasing a row that is not leased (already acked, or never leased) changes nothing.
    await outbox.ack([first[0].seq])
    outbox.release([first[0].seq, 10_000])
    assert outbox.counters["released"] == 2
    assert [item.record_id for item in await outbox.lease(10)] == [make_record(i).record_id for i in (6, 7)]


async def test_ack_deletes_the_rows_in_the_file_with_the_next_group_commit(
    database: Database, db_file: Path
) -> None:
    outbox, committer = committed_outbox(database)
    for i in range(6):
        outbox.put(make_record(i))
    await committer.flush()
    leased = await outbox.lease(4)

    await outbox.ack([leased[0].seq, leased[2].seq])

    # Off the totals at once; out of the file when the next group commits (module docstring).
    assert (await outbox.stats()).depth == 4
    assert len(ids_in_file(db_file)) == 6
    await committer.flush()
    expected_left = [make_record(i).record_id for i in (1, 3, 4, 5)]
    assert ids_in_file(db_file) == expected_left
    assert (await outbox.stats()).depth == 4
    assert outbox.counters["acked"] == 2
    assert outbox.leased_count == 2


async def test_same_record_id_is_one_row(database: Database, db_file: Path) -> None:
    outbox, committer = committed_outbox(database)
    outbox.put(make_record(1))
    outbox.put(make_record(1))  # same frame twice in one group
    await committer.flush()
    outbox.put(make_record(1))  # and again in a later group
    outbox.put(make_record(2))
    await committer.flush()

    assert ids_in_file(db_file) == [make_record(1).record_id, make_record(2).record_id]
    assert outbox.counters["put"] == 4
    assert outbox.counters["committed"] == 2
    assert outbox.counters["duplicate"] == 2


async def test_wait_records_returns_only_when_unleased_rows_may_exist(database: Database) -> None:
    outbox, committer = committed_outbox(database)
    await outbox.lease(10)  # nothing there: the outbox now knows it is drained
    waiter = asyncio.create_task(outbox.wait_records())
    await asyncio.sleep(0.1)
    assert not waiter.done()

    outbox.put(make_record(1))
    await asyncio.sleep(0.1)
    assert not waiter.done(), "a put that is not committed yet must not wake the uplink"

    await committer.flush()
    await asyncio.wait_for(waiter, timeout=1.0)

    (leased,) = await outbox.lease(10)
    waiter = asyncio.create_task(outbox.wait_records())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    outbox.release([leased.seq])
    await asyncio.wait_for(waiter, timeout=1.0)


async def test_alert_asks_for_an_urgent_commit(database: Database, db_file: Path) -> None:
    outbox = Outbox(database)
    # An interval far longer than the test: only the urgent flag can make it commit.
    committer = GroupCommitter(database, [outbox], interval_s=60.0, max_pending=1000)
    outbox.committer_notify = committer.notify
    task = asyncio.create_task(committer.run())
    try:
        outbox.put(make_record(1))
        await asyncio.sleep(0.2)
        assert ids_in_file(db_file) == []

        outbox.put(make_record(2, kind="alert"))
        for _ in range(100):
            if (await outbox.stats()).depth == 2:
                break
            await asyncio.sleep(0.02)
        assert ids_in_file(db_file) == [make_record(1).record_id, make_record(2).record_id]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_unacked_rows_survive_a_restart(db_file: Path) -> None:
    database = Database(db_file)
    outbox, committer = committed_outbox(database)
    for i in range(20):
        outbox.put(make_record(i))
    await committer.flush()
    leased = await outbox.lease(10)
    await outbox.ack([item.seq for item in leased[:5]])  # 5 delivered, 5 in flight, 10 not sent yet
    await committer.flush()
    database.close()

    database = Database(db_file)
    try:
        outbox = Outbox(database)
        again = await outbox.lease(100)

        assert [item.record_id for item in again] == [make_record(i).record_id for i in range(5, 20)]
        assert json.loads(again[0].body_json) == make_record(5).body
        assert (await outbox.stats()).depth == 15
    finally:
        database.close()


async def test_stats_count_rows_bytes_and_oldest_age(database: Database) -> None:
    mono = [100.0]
    outbox, committer = committed_outbox(database, mono_clock=lambda: mono[0])
    records = [make_record(i) for i in range(3)]
    for record in records:
        outbox.put(record)
        mono[0] += 1.5

    empty = await outbox.stats()
    assert (empty.depth, empty.bytes, empty.oldest_age_s) == (0, 0, None)
    await committer.flush()

    stats = await outbox.stats()
    assert stats.depth == 3
    assert stats.bytes == sum(
        len(json.dumps(r.body, separators=(",", ":"))) + len(r.record_id) + ROW_OVERHEAD_BYTES
        for r in records
    )
    assert stats.oldest_age_s == pytest.approx(4.5)
    assert stats.depth_by_class == {"alert": 0, "reading": 0, "event": 0, "diagnostics": 3}
    (first, *_rest) = await outbox.lease(1)
    await outbox.ack([first.seq])
    await committer.flush()
    assert (await outbox.stats()).oldest_age_s == pytest.approx(3.0)


class FailingOnce:
    """A second commit sink whose first write fails with an SQLite error: the whole group rolls back."""

    def __init__(self) -> None:
        self.failures_left = 1

    def take(self) -> bool:
        return True

    def write(self, conn: sqlite3.Connection, taken: bool) -> None:
        if self.failures_left:
            self.failures_left -= 1
            conn.execute("INSERT INTO no_such_table VALUES (1)")  # a real SQLite error

    def committed(self, taken: bool) -> None:
        pass


async def test_a_failed_group_keeps_its_deletes_for_the_next_one(database: Database, db_file: Path) -> None:
    outbox = Outbox(database)
    committer = GroupCommitter(database, [outbox, FailingOnce()], interval_s=0.05, max_pending=500)
    outbox.committer_notify = committer.notify
    for i in range(4):
        outbox.put(make_record(i))
    sound = GroupCommitter(database, [outbox], interval_s=0.05, max_pending=500)
    await sound.flush()
    leased = await outbox.lease(4)
    await outbox.ack([item.seq for item in leased[:3]])

    with pytest.raises(StorageError):
        await committer.flush()
    assert len(ids_in_file(db_file)) == 4  # rolled back with the group
    await committer.flush()

    assert ids_in_file(db_file) == [make_record(3).record_id]
    assert (await outbox.stats()).depth == 1


async def test_a_leased_row_evicted_then_acked_is_counted_once(database: Database, db_file: Path) -> None:
    size = len(json.dumps(make_record(0).body, separators=(",", ":"))) + 28 + ROW_OVERHEAD_BYTES
    outbox, committer = committed_outbox(database, max_bytes=3 * size + 10)
    for i in range(3):
        outbox.put(make_record(i))
    await committer.flush()
    leased = await outbox.lease(3)  # in flight
    for i in range(3, 5):
        outbox.put(make_record(i))
    await committer.flush()  # evicts the two oldest, leased ones
    await outbox.ack([item.seq for item in leased])  # their PUBACK arrives after all
    await committer.flush()

    stats = await outbox.stats()
    assert ids_in_file(db_file) == [make_record(i).record_id for i in (3, 4)]
    assert stats.depth == 2
    assert stats.evicted_total == {"evicted.diagnostics": 2}  # make_record: priority 0
