"""The rule engine's state, committed in the same SQLite transaction as the records it produced.

Owns the rows of the ``rules_state`` table (one per device, key = DevEUI hex, plus the row ``""``
for the state that belongs to no device) and its two moments: ``attach`` at start (restore the
engine from the table) and the ``CommitSink`` side (each group commit writes the state of the
devices whose episodes, aggregates or commanded levels changed since the last group).

Why in the group commit: an alert record and the episode that says "raised" must survive a
kill -9 together. Saved apart (a JSON file every 60 s, before), a crash could leave a committed
alert with its episode still closed, and the agent raised it a second time after the restart;
or the reverse, an episode open whose alert was never committed. The records and the state that
produced them are now one transaction, like a record and its frame counter.

The table is created with the database (``gateway/db/schema_add_rules_state.sql``, a compatible
addition: an agent rolled back to an earlier release still opens the file). It does not own what
the state means (``gateway.rules.engine``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from gateway import db
from gateway.db.commit import Database
from gateway.errors import StorageError
from gateway.rules.engine import RuleEngine, assemble_snapshot

log = logging.getLogger(__name__)

GLOBAL_KEY = ""
Changes = tuple[dict[str, dict[str, Any] | None], dict[str, Any] | None]


class RulesStateStore:
    """A ``CommitSink`` for the engine's changed state; ``attach`` it once the engine is loaded."""

    def __init__(self) -> None:
        self._engine: RuleEngine | None = None
        self.restored_devices = 0

    def attach(self, database: Database, engine: RuleEngine, legacy_file: Path | None = None) -> None:
        """Restore ``engine`` from the table (or, once, from the JSON file older agents saved: it
        is then written to the table and removed), and start taking its changes."""
        rows = database.run_sync(_read)
        try:
            if rows:
                devices = {k: json.loads(v) for k, v in rows.items() if k != GLOBAL_KEY}
                glob = json.loads(rows[GLOBAL_KEY]) if GLOBAL_KEY in rows else None
                engine.restore(assemble_snapshot(devices, glob))
                self.restored_devices = len(devices)
            elif legacy_file is not None and legacy_file.exists():
                engine.restore(json.loads(legacy_file.read_text()))
                everything = {dev: engine.device_state(dev) for dev in engine.state_devices()}
                database.run_sync(_write_now, (everything, engine.global_state()))
                legacy_file.unlink()
                self.restored_devices = len(everything)
                log.info("rules state moved from %s into the database", legacy_file)
        except (OSError, ValueError, StorageError) as exc:
            log.error("rules state not restored (open alerts may be raised again): %s", exc)
        engine.take_changes()  # what was just loaded is what is stored
        self._engine = engine
        if self.restored_devices:
            log.info("rules state restored for %d devices", self.restored_devices)

    # -- CommitSink ---------------------------------------------------------------------------

    def take(self) -> Changes | None:
        if self._engine is None or not self._engine.has_changes:
            return None
        return self._engine.take_changes()

    def write(self, conn: sqlite3.Connection, taken: Changes) -> None:
        _write(conn, taken)

    def committed(self, taken: Changes) -> None:
        """Nothing to do: the engine's memory is already ahead."""

    def give_back(self, taken: Changes) -> None:
        """The group failed (a full disk): the next one writes these devices' state again."""
        if self._engine is not None:
            devices, glob = taken
            self._engine.mark_changed(devices, glob is not None)


def _read(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute("SELECT key, state FROM rules_state")}


def _write_now(conn: sqlite3.Connection, taken: Changes) -> None:
    with db.transaction(conn):
        _write(conn, taken)


def _write(conn: sqlite3.Connection, taken: Changes) -> None:
    devices, glob = taken
    conn.executemany(
        "INSERT INTO rules_state (key, state) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET state = excluded.state",
        [(dev, json.dumps(st, separators=(",", ":"))) for dev, st in devices.items() if st is not None]
        + ([(GLOBAL_KEY, json.dumps(glob, separators=(",", ":")))] if glob is not None else []),
    )
    conn.executemany(
        "DELETE FROM rules_state WHERE key = ?", [(dev,) for dev, st in devices.items() if st is None]
    )
