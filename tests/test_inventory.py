"""gateway.inventory and gateway.inventory_state: honest per-device counts, kept across a restart.

A join and a retransmission are not errors (issue 19: every OTAA device showed `err 1`); the view
and the readings are written by the group commit, bounded in time, and read back at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.history import ReadingHistory
from gateway.inventory import Inventory
from gateway.inventory_state import InventoryStateStore

DEV = "70b3d57ed0000001"
OTHER = "70b3d57ed0000002"


def event(verdict: str, at_s: float, dev: str = DEV, **extra: Any) -> dict[str, Any]:
    return {
        "dev_eui": dev, "at_s": at_s, "verdict": verdict, "fcnt": 1, "fport": 85, "rssi_dbm": -90.0,
        "snr_db": 4.5, "sf": 9, "data": {"battery": 88}, **extra,
    }  # fmt: skip


def test_a_join_and_a_retransmission_are_counted_apart_not_as_errors() -> None:
    inventory = Inventory()
    inventory(event("joined", 1000.0))
    inventory(event("accepted", 1001.0))
    inventory(event("retransmission", 1002.0))
    inventory(event("retransmission", 1003.0))
    seen = inventory.snapshot(1004.0)[DEV]
    assert seen["errors"] == 0 and seen["last_error"] == ""
    assert seen["joins"] == 1 and seen["retransmissions"] == 2 and seen["frames"] == 1
    assert seen["last_seen_s"] == 1001.0 and seen["battery"] == 88.0


def test_refused_frames_of_the_device_and_decoding_errors_are_errors() -> None:
    inventory = Inventory()
    inventory(event("accepted", 1.0, decode_error="payload too short"))
    inventory(event("rejected", 2.0, reason="devnonce_replayed"))
    seen = inventory.snapshot(3.0)[DEV]
    assert seen["errors"] == 2 and seen["last_error"] == "devnonce_replayed" and seen["frames"] == 1


def test_the_whole_view_survives_export_and_restore() -> None:
    inventory = Inventory()
    for n in range(3):
        inventory(event("accepted", 3600.0 * n))
    inventory(event("joined", 7300.0))
    copy = Inventory()
    doc = inventory.export(DEV)
    assert doc is not None
    copy.restore(DEV, doc)
    assert copy.snapshot(7300.0) == inventory.snapshot(7300.0)
    assert copy.snapshot(7300.0)[DEV]["frames_24h"] == 3
    assert copy.snapshot(3600.0 * 25)[DEV]["frames_24h"] == 1  # the hour buckets came back too


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(db.db_path(tmp_path))
    yield database
    database.close()


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def views() -> tuple[Inventory, ReadingHistory]:
    return Inventory(), ReadingHistory(per_device=3)


def feed(
    store: InventoryStateStore, inventory: Inventory, history: ReadingHistory, ev: dict[str, Any]
) -> None:
    for listener in (inventory, history, store):
        listener(ev)


def rows(database: Database, table: str) -> int:
    count: int = database.run_sync(lambda conn: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    return count


async def test_a_group_carries_the_state_at_most_once_per_interval_then_all_of_it(database: Database) -> None:
    inventory, history = views()
    clock = Clock()
    store = InventoryStateStore(inventory, history, interval_s=5.0, monotonic=clock)
    committer = GroupCommitter(database, [store], interval_s=0.01, max_pending=100)
    feed(store, inventory, history, event("accepted", 1.0, fcnt=1))
    await committer.flush()
    assert rows(database, "device_seen") == 1 and rows(database, "device_readings") == 1
    clock.now_s += 1.0  # within the interval: the groups of the next frames carry nothing of it
    for n in range(2, 6):
        feed(store, inventory, history, event("accepted", float(n), fcnt=n))
        await committer.flush()
    assert rows(database, "device_readings") == 1
    clock.now_s += 5.0
    await committer.flush()
    # Every reading written once, only the last three kept (the history's bound).
    assert rows(database, "device_readings") == 3

    restarted_inventory, restarted_history = views()
    restarted = InventoryStateStore(restarted_inventory, restarted_history)
    restarted.restore(database, registered={DEV})
    assert restarted_inventory.snapshot(6.0) == inventory.snapshot(6.0)
    assert [r["fcnt"] for r in restarted_history.readings(DEV)] == [3, 4, 5]


async def test_the_timer_asks_for_a_group_when_the_interval_is_over(database: Database) -> None:
    inventory, history = views()
    store = InventoryStateStore(inventory, history, interval_s=0.05)
    asked: list[int] = []
    store.committer_notify = lambda: asked.append(1)
    feed(store, inventory, history, event("accepted", 1.0))
    assert store.take() is not None
    feed(store, inventory, history, event("accepted", 2.0, fcnt=2))  # a burst's last frame
    assert store.take() is None
    await asyncio.sleep(0.15)
    assert asked and store.take() is not None


async def test_final_lifts_the_interval_and_a_failed_group_is_given_back(database: Database) -> None:
    inventory, history = views()
    store = InventoryStateStore(inventory, history, interval_s=60.0)
    feed(store, inventory, history, event("accepted", 1.0))
    assert store.take() is not None
    feed(store, inventory, history, event("accepted", 2.0, fcnt=2))
    assert store.take() is None
    store.final()
    taken = store.take()
    assert taken is not None and taken[1][DEV][0]["fcnt"] == 2
    store.give_back(taken)
    again = store.take()
    assert again is not None and again[1] == taken[1]


async def test_a_device_removed_from_the_registry_is_not_restored_and_its_rows_go(database: Database) -> None:
    inventory, history = views()
    store = InventoryStateStore(inventory, history)
    committer = GroupCommitter(database, [store], interval_s=0.01, max_pending=100)
    feed(store, inventory, history, event("accepted", 1.0))
    feed(store, inventory, history, event("accepted", 1.0, dev=OTHER))
    await committer.flush()
    inventory, history = views()
    store = InventoryStateStore(inventory, history)
    committer = GroupCommitter(database, [store], interval_s=0.01, max_pending=100)
    store.restore(database, registered={DEV})
    assert set(inventory.snapshot()) == {DEV} and history.readings(OTHER) == []
    await committer.flush()
    assert rows(database, "device_seen") == 1 and rows(database, "device_readings") == 1
