"""Outbox priorities, byte and age bounds, eviction policy, the outbox clock, corrupt-file quarantine.

The contract under test is ARCHITECTURE.md §3.3 ("bounded in bytes and age; when full
it evicts lowest priority, oldest first, alerts last, and counts what it evicted;
nothing is expired by wall-clock time alone") and docs/outbox.md. Records are made up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record, RecordKind
from gateway.outbox import Outbox
from gateway.outbox.age_clock import restore
from gateway.outbox.store import EXPIRY_CHECK_S, ROW_OVERHEAD_BYTES
from tests.outbox.helpers import committed_outbox, ids_in_file

KIND_PRIORITY: dict[str, int] = {
    "alert": Priority.ALERT,
    "reading": Priority.READING,
    "event": Priority.EVENT,
    "diag": Priority.DIAGNOSTICS,
}


def rec(i: int, kind: str = "reading", pad: int = 0) -> Record:
    record_kind: RecordKind = "event" if kind == "diag" else kind  # type: ignore[assignment]
    body: dict[str, Any] = {"id": f"{kind}-{i:06d}", "kind": record_kind, "data": {"x": i, "pad": "p" * pad}}
    return Record(record_id=body["id"], kind=record_kind, priority=KIND_PRIORITY[kind], body=body)


def size_of(record: Record) -> int:
    import json

    return len(json.dumps(record.body, separators=(",", ":"))) + len(record.record_id) + ROW_OVERHEAD_BYTES


def make(database: Database, **kwargs: Any) -> tuple[Outbox, GroupCommitter]:
    return committed_outbox(database, max_pending=10_000, **kwargs)


# --- priorities -------------------------------------------------------------------------------


async def test_lease_takes_alerts_then_readings_then_events_then_diagnostics(database: Database) -> None:
    outbox, committer = make(database)
    order = ["diag", "event", "reading", "alert", "reading", "diag", "alert", "event"]
    for i, kind in enumerate(order):
        outbox.put(rec(i, kind))
    await committer.flush()

    first = await outbox.lease(3)
    rest = await outbox.lease(100)

    assert [x.record_id for x in first] == ["alert-000003", "alert-000006", "reading-000002"]
    assert [x.record_id for x in rest] == [
        "reading-000004",
        "event-000001",
        "event-000007",
        "diag-000000",
        "diag-000005",
    ]
    assert await outbox.lease(10) == []


async def test_lease_by_priority_range_and_released_rows_first(database: Database) -> None:
    outbox, committer = make(database)
    for i in range(6):
        outbox.put(rec(i, "reading"))
    outbox.put(rec(100, "alert"))
    await committer.flush()

    alerts = await outbox.lease(10, min_priority=Priority.ALERT)
    assert [x.record_id for x in alerts] == ["alert-000100"]
    bulk = await outbox.lease(3, max_priority=Priority.ALERT - 1)
    assert [x.record_id for x in bulk] == ["reading-000000", "reading-000001", "reading-000002"]

    outbox.release([bulk[1].seq])
    again = await outbox.lease(2, max_priority=Priority.ALERT - 1)
    assert [x.record_id for x in again] == ["reading-000001", "reading-000003"]


async def test_wait_records_wakes_only_for_its_priority_range(database: Database) -> None:
    import asyncio

    outbox, committer = make(database)
    await outbox.lease(10)
    alert_waiter = asyncio.create_task(outbox.wait_records(min_priority=Priority.ALERT))
    outbox.put(rec(1, "reading"))
    await committer.flush()
    await asyncio.sleep(0.05)
    assert not alert_waiter.done(), "a reading must not wake the alert lane"
    outbox.put(rec(2, "alert"))
    await committer.flush()
    await asyncio.wait_for(alert_waiter, 1.0)


# --- bounds -------------------------------------------------------------------------------------


async def test_full_outbox_evicts_lowest_priority_oldest_first_alerts_last(
    database: Database, db_file: Path
) -> None:
    unit = size_of(rec(0, "reading"))
    outbox, committer = make(database, max_bytes=10 * unit)
    for i in range(3):
        outbox.put(rec(i, "alert"))
    for i in range(3):
        outbox.put(rec(10 + i, "event"))
    for i in range(4):
        outbox.put(rec(20 + i, "reading"))
    await committer.flush()
    assert outbox.counters.get("evicted.event", 0) == 0

    for i in range(4):  # four more readings: the three events go, then the oldest reading
        outbox.put(rec(30 + i, "reading"))
    await committer.flush()

    kept = ids_in_file(db_file)
    assert not [k for k in kept if k.startswith("event")]
    assert "reading-000020" not in kept and "reading-000021" in kept
    assert [k for k in kept if k.startswith("alert")] == ["alert-000000", "alert-000001", "alert-000002"]
    assert outbox.counters["evicted.event"] == 3 and outbox.counters["evicted.reading"] == 1
    stats = await outbox.stats()
    assert stats.bytes <= 10 * unit
    assert stats.evicted_total == {"evicted.event": 3, "evicted.reading": 1}


async def test_an_incoming_lower_priority_record_is_dropped_rather_than_an_alert(
    database: Database, db_file: Path
) -> None:
    unit = size_of(rec(0, "alert"))
    outbox, committer = make(database, max_bytes=3 * unit)
    for i in range(3):
        outbox.put(rec(i, "alert"))
    await committer.flush()
    outbox.put(rec(9, "diag"))
    await committer.flush()

    assert ids_in_file(db_file) == ["alert-000000", "alert-000001", "alert-000002"]
    assert outbox.counters["evicted.diagnostics"] == 1


async def test_eviction_totals_survive_a_restart(db_file: Path) -> None:
    unit = size_of(rec(0, "reading"))
    database = Database(db_file)
    outbox, committer = make(database, max_bytes=2 * unit)
    for i in range(5):
        outbox.put(rec(i, "reading"))
    await committer.flush()
    database.close()

    database = Database(db_file)
    try:
        outbox, _ = make(database, max_bytes=2 * unit)
        stats = await outbox.stats()
        assert stats.evicted_total == {"evicted.reading": 3}
        assert stats.depth == 2 and stats.depth_by_class["reading"] == 2
    finally:
        database.close()


async def test_records_older_than_max_age_on_the_outbox_clock_are_expired(
    database: Database, db_file: Path
) -> None:
    mono = [1000.0]
    outbox, committer = make(database, max_age_s=60.0, mono_clock=lambda: mono[0])
    outbox.put(rec(1, "reading"))
    outbox.put(rec(2, "alert"))
    await committer.flush()
    mono[0] += 30.0
    outbox.put(rec(3, "reading"))
    await committer.flush()
    mono[0] += 31.0 + EXPIRY_CHECK_S  # the first two are now 61+ s old
    outbox.put(rec(4, "reading"))
    await committer.flush()

    assert ids_in_file(db_file) == ["reading-000003", "reading-000004"]
    assert outbox.counters["expired.reading"] == 1 and outbox.counters["expired.alert"] == 1


async def test_a_wall_clock_jump_does_not_expire_anything(db_file: Path) -> None:
    wall = [1_700_000_000.0]
    database = Database(db_file)
    outbox, committer = make(database, max_age_s=3600.0, wall_clock=lambda: wall[0])
    outbox.put(rec(1))
    await committer.flush()
    database.close()

    wall[0] += 10 * 365 * 86400.0  # the clock says ten years passed (bogus NTP / RTC-less boot)
    database = Database(db_file)
    try:
        outbox, committer = make(database, max_age_s=3600.0, wall_clock=lambda: wall[0])
        outbox.put(rec(2))
        await committer.flush()
        assert ids_in_file(db_file) == ["reading-000001", "reading-000002"]
        age = (await outbox.stats()).oldest_age_s
        assert age is not None and age < 60
    finally:
        database.close()


async def test_plausible_down_time_ages_records_across_a_restart(db_file: Path) -> None:
    wall = [1_700_000_000.0]
    database = Database(db_file)
    outbox, committer = make(database, max_age_s=86400.0, wall_clock=lambda: wall[0])
    outbox.put(rec(1))
    await committer.flush()
    database.close()

    wall[0] += 3600.0
    database = Database(db_file)
    try:
        outbox, _ = make(database, max_age_s=86400.0, wall_clock=lambda: wall[0])
        age = (await outbox.stats()).oldest_age_s
        assert age is not None and 3599 < age < 3660
    finally:
        database.close()


@pytest.mark.parametrize(
    ("saved_clock", "saved_wall", "newest", "wall_now", "expected_base"),
    [
        (None, None, None, 5e9, 0.0),  # a new file
        (100.0, 1000.0, 90.0, 1600.0, 700.0),  # 600 s down, credited
        (100.0, 1000.0, 90.0, 400.0, 100.0),  # clock went back: nothing credited
        (100.0, 1000.0, 90.0, 1000.0 + 10 * 86400, 100.0),  # beyond the credit bound: nothing
        (100.0, 1000.0, 150.0, 1000.0, 150.0),  # never behind a committed record
    ],
)
def test_clock_restore(
    saved_clock: float | None,
    saved_wall: float | None,
    newest: float | None,
    wall_now: float,
    expected_base: float,
) -> None:
    restored = restore(
        saved_clock_s=saved_clock,
        saved_wall_s=saved_wall,
        newest_record_s=newest,
        wall_now_s=wall_now,
        max_credit_s=7 * 86400.0,
    )
    assert restored.base_s == expected_base


# --- corrupt files --------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_quarantined_and_a_fresh_one_started(
    db_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_file.write_bytes(b"this is not an SQLite file" * 100)
    database = Database(db_file)
    try:
        assert database.quarantined is not None and database.quarantined.exists()
        assert database.quarantined.name.startswith("edgegw.sqlite.corrupt-")
        assert database.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) == 0
    finally:
        database.close()
    assert any(r.levelname == "ERROR" and "CORRUPT" in r.message for r in caplog.records)


async def test_a_damaged_page_is_quarantined_and_readable_rows_are_salvaged(db_file: Path) -> None:
    database = Database(db_file)
    database.run_sync(
        lambda c: c.execute(
            "INSERT INTO devices (dev_eui, profile, activation, created_at) "
            "VALUES ('0011223344556677', 'a/b', 'abp', 'now')"
        )
    )
    outbox, committer = make(database)
    for i in range(2000):
        outbox.put(rec(i, "reading", pad=200))
    await committer.flush()
    database.run_sync(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    database.close()
    with db_file.open("r+b") as f:  # scribble over a page in the middle of the outbox table
        f.seek(4096 * 60)
        f.write(b"\xff" * 4096)

    database = Database(db_file)
    try:
        assert database.quarantined is not None
        devices = database.run_sync(lambda c: c.execute("SELECT dev_eui FROM devices").fetchall())
        assert devices == [("0011223344556677",)]
        Outbox(database)  # the fresh file is usable
    finally:
        database.close()
