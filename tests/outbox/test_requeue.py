"""Quarantined records moved back into the outbox (issue 16, finding 7 review), over a real SQLite file.

``Outbox.requeue_quarantined`` is carried out by the real ``GroupCommitter``'s next group: every row of
``outbox_quarantine`` goes back into ``outbox`` with a new seq, the in-memory totals count it again,
the uplink leases it again, and ``quarantined_total`` drops by as many. ``requeue_in_file`` does the
same in the file when no agent runs (``edgegw buffer quarantine --requeue``); ``read_quarantine`` is
what ``edgegw buffer quarantine`` lists.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from gateway.db.commit import Database
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from gateway.outbox.inspect import read_quarantine, requeue_in_file
from tests.outbox.helpers import committed_outbox

TOO_LARGE = "too_large"


def record(name: str, *, alert: bool = False, pad_bytes: int = 100) -> Record:
    kind = "alert" if alert else "reading"
    body: dict[str, Any] = {
        "id": name,
        "kind": kind,
        "dev_eui": "70b3d57ed00000ff",
        "data": {"x": "y" * pad_bytes},
    }
    return Record(
        record_id=name, kind=kind, priority=Priority.ALERT if alert else Priority.READING, body=body
    )


def rows(path: Path, sql: str) -> list[Any]:
    """Read through a connection of its own: what is on disk, not what the outbox believes."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def quarantine_some(outbox: Outbox, flush: Any, *, keep: list[str], set_aside: list[str]) -> None:
    """Lease everything; ``set_aside`` ids are quarantined (as the forwarder does with a record the
    broker refuses), the others acked; one group commit carries both."""
    leased = await outbox.lease(100)
    assert {row.record_id for row in leased} == {*keep, *set_aside}
    outbox.quarantine([row.seq for row in leased if row.record_id in set_aside], TOO_LARGE)
    await outbox.ack([row.seq for row in leased if row.record_id in keep])
    await flush()


async def test_requeue_moves_every_quarantined_row_back_and_they_are_leased_again(
    database: Database, db_file: Path
) -> None:
    outbox, committer = committed_outbox(database)
    for item in (record("big-reading", pad_bytes=30_000), record("big-alert", alert=True, pad_bytes=30_000)):
        outbox.put(item)
    outbox.put(record("small"))
    await committer.flush()
    await quarantine_some(outbox, committer.flush, keep=["small"], set_aside=["big-reading", "big-alert"])
    old_seqs = dict(rows(db_file, "SELECT record_id, seq FROM outbox_quarantine"))
    assert set(old_seqs) == {"big-reading", "big-alert"}
    assert rows(db_file, "SELECT count(*) FROM outbox") == [(0,)]
    assert outbox.quarantined_total == 2 and outbox.depth == 0 and outbox.bytes == 0
    assert not outbox.may_have()
    sizes = dict(rows(db_file, "SELECT record_id, size FROM outbox_quarantine"))

    runner = asyncio.create_task(committer.run())  # the agent's commit task
    try:
        moved = await asyncio.wait_for(outbox.requeue_quarantined(), 5.0)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert moved == 2
    assert rows(db_file, "SELECT count(*) FROM outbox_quarantine") == [(0,)]
    back = dict(rows(db_file, "SELECT record_id, seq FROM outbox"))
    assert set(back) == {"big-reading", "big-alert"}
    assert min(back.values()) > max(old_seqs.values()), "new seqs, above every lease cursor"
    stats = await outbox.stats()
    assert stats.depth == 2 and stats.bytes == sum(sizes.values())
    assert stats.depth_by_class["alert"] == 1 and stats.depth_by_class["reading"] == 1
    assert stats.quarantined == 0 and outbox.quarantined_total == 0
    assert outbox.counters["requeued"] == 2
    # Leased again, alerts first, as any committed row; acked, they leave the file.
    assert outbox.may_have(min_priority=Priority.ALERT) and outbox.may_have(max_priority=Priority.ALERT - 1)
    leased = await outbox.lease(10)
    assert [row.record_id for row in leased] == ["big-alert", "big-reading"]
    await outbox.ack([row.seq for row in leased])
    await committer.flush()
    assert rows(db_file, "SELECT count(*) FROM outbox") == [(0,)]
    assert outbox.depth == 0 and outbox.bytes == 0


async def test_a_row_quarantined_in_the_requeue_group_stays_and_the_totals_agree_after_a_restart(
    database: Database, db_file: Path
) -> None:
    outbox, committer = committed_outbox(database)
    for name in ("first", "second", "third"):
        outbox.put(record(name))
    await committer.flush()
    first, second, _third = await outbox.lease(3)
    outbox.quarantine([first.seq], TOO_LARGE)
    await committer.flush()
    # Refused just now, in the same group as the requeue: it was refused by the broker of now.
    outbox.quarantine([second.seq], TOO_LARGE)
    asked = asyncio.create_task(outbox.requeue_quarantined())
    await asyncio.sleep(0)
    await committer.flush()
    assert await asked == 1

    assert rows(db_file, "SELECT record_id FROM outbox_quarantine") == [("second",)]
    assert sorted(rows(db_file, "SELECT record_id FROM outbox")) == [("first",), ("third",)]
    assert outbox.quarantined_total == 1 and outbox.depth == 2
    # `third` is still leased: only `first` (requeued) is there to lease.
    assert [row.record_id for row in await outbox.lease(10)] == ["first"]

    # What a restarted agent reads from the file is what this one counted.
    again = Outbox(database)
    assert again.quarantined_total == 1 and again.depth == 2 and again.bytes == outbox.bytes


async def test_a_caller_that_stops_waiting_does_not_withdraw_the_requeue(
    database: Database, db_file: Path
) -> None:
    outbox, committer = committed_outbox(database)
    outbox.put(record("lone"))
    await committer.flush()
    await quarantine_some(outbox, committer.flush, keep=[], set_aside=["lone"])

    # No commit task runs (as during a full disk): the control query gives up waiting...
    try:
        await asyncio.wait_for(outbox.requeue_quarantined(), 0.05)
        raise AssertionError("the requeue cannot be done before a group commit")
    except TimeoutError:
        pass
    assert rows(db_file, "SELECT record_id FROM outbox_quarantine") == [("lone",)]
    # ...and the next group that commits carries it out all the same.
    await committer.flush()
    assert rows(db_file, "SELECT record_id FROM outbox") == [("lone",)]
    assert rows(db_file, "SELECT count(*) FROM outbox_quarantine") == [(0,)]
    assert outbox.quarantined_total == 0 and outbox.depth == 1


async def test_listing_and_requeue_in_the_file_when_no_agent_runs(db_file: Path) -> None:
    database = Database(db_file)
    outbox, committer = committed_outbox(database)
    for item in (record("gone-big", pad_bytes=30_000), record("alert-big", alert=True, pad_bytes=30_000)):
        outbox.put(item)
    outbox.put(record("waiting"))
    await committer.flush()
    leased = await outbox.lease(10)
    outbox.quarantine([row.seq for row in leased if row.record_id != "waiting"], TOO_LARGE)
    outbox.release([row.seq for row in leased if row.record_id == "waiting"])
    await committer.flush()
    newest_created_s = rows(db_file, "SELECT max(created_s) FROM outbox")[0][0]
    database.close()

    listed = read_quarantine(db_file)
    assert listed["quarantined"] == 2 and listed["by_reason"] == {TOO_LARGE: 2}
    assert {(r["id"], r["kind"], r["class"], r["reason"]) for r in listed["records"]} == {
        ("gone-big", "reading", "reading", TOO_LARGE),
        ("alert-big", "alert", "alert", TOO_LARGE),
    }
    assert all(r["size"] > 30_000 and r["quarantined_at"].endswith("Z") for r in listed["records"])
    assert listed["bytes"] == sum(r["size"] for r in listed["records"])
    assert read_quarantine(db_file, limit=1)["quarantined"] == 2
    assert len(read_quarantine(db_file, limit=1)["records"]) == 1

    assert requeue_in_file(db_file) == 2
    assert read_quarantine(db_file)["quarantined"] == 0
    # created_s never below the newest row's: the agent relies on it not decreasing along seq.
    assert (
        rows(db_file, "SELECT min(created_s) FROM outbox WHERE record_id != 'waiting'")[0][0]
        >= newest_created_s
    )
    assert requeue_in_file(db_file) == 0

    # An agent started afterwards counts them and leases them.
    database = Database(db_file)
    try:
        outbox = Outbox(database)
        assert outbox.depth == 3 and outbox.quarantined_total == 0
        assert sorted(row.record_id for row in await outbox.lease(10)) == ["alert-big", "gone-big", "waiting"]
    finally:
        database.close()


def test_a_file_without_a_quarantine_table_lists_nothing(tmp_path: Path) -> None:
    # A database no agent of this version opened yet: the table is created at run time.
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value REAL)")
    conn.close()
    assert read_quarantine(path) == {"quarantined": 0, "bytes": 0, "by_reason": {}, "records": []}
