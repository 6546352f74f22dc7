"""What the agent heard from each device, kept across a restart: the inventory and the readings.

Owns the rows of ``device_seen`` (one per device: ``gateway.inventory``'s last seen, signal,
battery, counts and 24 h hour buckets) and ``device_readings`` (``gateway.history``'s last readings
of each device), and their two moments: ``restore`` at start (the inventory and the history filled
from the tables) and the ``CommitSink`` side (a group commit writes the devices whose view changed
and the readings that arrived since the last write).

Why: every pushed configuration and agent update restarts the agent; before, `edgegw devices` then
said "never" for a river station at FCnt 154 and the readings chart was empty (issue 19).

Bounded for the SD card: the state rides on a group commit at most every ``WRITE_INTERVAL_S`` (the
records' groups come every 50 ms; writing a device row in each would add pages to every one of
them), only for the devices that changed, and each reading is written once; a timer asks for a
group when the interval is over, so a burst's last changes do not wait for the next frame. What a
kill -9 loses is what changed since the last write (at most ``WRITE_INTERVAL_S`` of views, never a
record: the outbox owns those). ``final`` lifts the interval for the last group at a clean stop.

The tables are a compatible addition (``gateway/db/schema_add_device_state.sql``). It does not own
what the views mean (``gateway.inventory``, ``gateway.history``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from typing import Any

from gateway.db.commit import Database
from gateway.errors import StorageError
from gateway.history import ReadingHistory
from gateway.inventory import Inventory

log = logging.getLogger(__name__)

WRITE_INTERVAL_S = 5.0
"""At most one group commit in this interval carries the devices' state (SD-card wear)."""

Taken = tuple[dict[str, dict[str, Any] | None], dict[str, list[dict[str, Any]]]]
"""(device -> inventory state, None to delete the device), (device -> readings to append)."""


class InventoryStateStore:
    """A pipeline listener that notes which devices changed, and the ``CommitSink`` that writes them.

    List it after the inventory and the history in ``UplinkPipeline.listeners``: it reads their
    state as they left it.
    """

    def __init__(
        self,
        inventory: Inventory,
        history: ReadingHistory,
        *,
        interval_s: float = WRITE_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inventory, self._history = inventory, history
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._dirty: set[str] = set()
        self._forgotten: set[str] = set()
        self._new_readings: dict[str, int] = {}
        self._due_s = 0.0  # monotonic time from which a group may carry the state again
        self._timer: asyncio.TimerHandle | None = None
        self.committer_notify: Callable[[], None] | None = None
        """``GroupCommitter.notify``: asked for a group when the interval is over."""
        self.restored_devices = 0

    def restore(self, database: Database, registered: Collection[str] | None = None) -> None:
        """Fill the inventory and the history from the tables (at start, before any frame).

        Devices not in ``registered`` (removed while the agent was stopped) are not restored and their
        rows are deleted by the next write. A damaged row is skipped, logged once (the view then starts
        again for that device); nothing here stops the agent.
        """
        try:
            seen, readings = database.run_sync(_read)
        except (sqlite3.Error, StorageError) as exc:
            log.error("devices' last seen and readings not restored: %s", exc)
            return
        skipped = 0
        for dev_eui, state in seen.items():
            if registered is not None and dev_eui not in registered:
                self._forgotten.add(dev_eui)
                continue
            try:
                self._inventory.restore(dev_eui, json.loads(state))
            except (ValueError, TypeError, KeyError):
                skipped += 1
                continue
            self.restored_devices += 1
        for dev_eui, rows in readings.items():
            if registered is not None and dev_eui not in registered:
                self._forgotten.add(dev_eui)
                continue
            try:
                self._history.restore(dev_eui, [json.loads(row) for row in rows])
            except ValueError:
                skipped += 1
        if skipped:
            log.warning("%d damaged device state rows skipped (their views start again)", skipped)
        if self.restored_devices:
            log.info("last seen and readings restored for %d devices", self.restored_devices)

    def forget(self, dev_eui: str) -> None:
        """The device left the registry: its rows go with the next write (the views forget it apart)."""
        self._dirty.discard(dev_eui)
        self._new_readings.pop(dev_eui, None)
        self._forgotten.add(dev_eui)
        self._ask_for_group()

    def changed(self, dev_eui: str) -> None:
        """The device's inventory view changed outside a frame event (a DevStatusAns): write it."""
        self._dirty.add(dev_eui)
        self._forgotten.discard(dev_eui)
        self._ask_for_group()

    # -- pipeline listener --------------------------------------------------------------------

    def __call__(self, event: dict[str, Any]) -> None:
        dev_eui = event.get("dev_eui")
        if not dev_eui:
            return
        self._dirty.add(dev_eui)
        self._forgotten.discard(dev_eui)
        if event.get("verdict") == "accepted":
            n = self._new_readings.get(dev_eui, 0) + 1
            self._new_readings[dev_eui] = min(n, self._history.per_device)
        self._ask_for_group()

    def _ask_for_group(self) -> None:
        """A group at the end of the interval (or now): the timer, once per interval."""
        if self._timer is not None or self.committer_notify is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test feeding events): whoever flushes takes the state
        delay_s = max(0.0, self._due_s - self._monotonic())
        self._timer = loop.call_later(delay_s, self._due)

    def _due(self) -> None:
        self._timer = None
        if not self.has_changes or self.committer_notify is None:
            return
        if self._monotonic() < self._due_s:
            self._ask_for_group()  # a group took the state meanwhile: wait for the new interval
        else:
            self.committer_notify()

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty or self._forgotten)

    def final(self) -> None:
        """The next group carries everything, interval or not (a clean stop)."""
        self._due_s = 0.0

    # -- CommitSink ---------------------------------------------------------------------------

    def take(self) -> Taken | None:
        if not self.has_changes or self._monotonic() < self._due_s:
            return None
        self._due_s = self._monotonic() + self._interval_s
        seen: dict[str, dict[str, Any] | None] = {dev: None for dev in self._forgotten}
        readings: dict[str, list[dict[str, Any]]] = {}
        for dev in self._dirty:
            seen[dev] = self._inventory.export(dev)
            n = self._new_readings.get(dev, 0)
            if n:
                readings[dev] = self._history.readings(dev)[-n:]
        self._dirty, self._forgotten, self._new_readings = set(), set(), {}
        return seen, readings

    def write(self, conn: sqlite3.Connection, taken: Taken) -> None:
        _write(conn, taken, self._history.per_device)

    def committed(self, taken: Taken) -> None:
        """Nothing to do: the views in memory are already ahead."""

    def give_back(self, taken: Taken) -> None:
        """The group failed (a full disk): the next write carries these devices again."""
        seen, readings = taken
        for dev, state in seen.items():
            if state is None:
                if dev not in self._dirty:
                    self._forgotten.add(dev)
            else:
                self._dirty.add(dev)
        for dev, rows in readings.items():
            n = self._new_readings.get(dev, 0) + len(rows)
            self._new_readings[dev] = min(n, self._history.per_device)
        self._due_s = 0.0


def _read(conn: sqlite3.Connection) -> tuple[dict[str, str], dict[str, list[str]]]:
    seen = {str(dev): str(state) for dev, state in conn.execute("SELECT dev_eui, state FROM device_seen")}
    readings: dict[str, list[str]] = {}
    for dev, reading in conn.execute("SELECT dev_eui, reading FROM device_readings ORDER BY dev_eui, id"):
        readings.setdefault(str(dev), []).append(str(reading))
    return seen, readings


def _write(conn: sqlite3.Connection, taken: Taken, per_device: int) -> None:
    seen, readings = taken
    conn.executemany(
        "INSERT INTO device_seen (dev_eui, state) VALUES (?, ?)"
        " ON CONFLICT (dev_eui) DO UPDATE SET state = excluded.state",
        [(dev, json.dumps(st, separators=(",", ":"))) for dev, st in seen.items() if st is not None],
    )
    gone = [(dev,) for dev, st in seen.items() if st is None]
    conn.executemany("DELETE FROM device_seen WHERE dev_eui = ?", gone)
    conn.executemany("DELETE FROM device_readings WHERE dev_eui = ?", gone)
    conn.executemany(
        "INSERT INTO device_readings (dev_eui, reading) VALUES (?, ?)",
        [(dev, json.dumps(r, separators=(",", ":"))) for dev, rows in readings.items() for r in rows],
    )
    # The per-device bound of gateway.history: the oldest beyond it leave in the same transaction.
    conn.executemany(
        "DELETE FROM device_readings WHERE dev_eui = ?1 AND id <= (SELECT id FROM device_readings"
        " WHERE dev_eui = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        [(dev, per_device) for dev in readings],
    )
