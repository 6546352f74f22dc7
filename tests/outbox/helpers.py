"""An outbox wired to its group committer as the agent wires them, and what is in the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.db.commit import Database, GroupCommitter
from gateway.outbox import Outbox


def committed_outbox(
    database: Database, max_pending: int = 500, **kwargs: Any
) -> tuple[Outbox, GroupCommitter]:
    """An ``Outbox(database, **kwargs)`` whose puts a ``GroupCommitter`` commits every 50 ms."""
    outbox = Outbox(database, **kwargs)
    committer = GroupCommitter(database, [outbox], interval_s=0.05, max_pending=max_pending)
    outbox.committer_notify = committer.notify
    return outbox, committer


def ids_in_file(path: Path) -> list[str]:
    """Record ids in the outbox table, read through a separate connection (what is on disk)."""
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT record_id FROM outbox ORDER BY seq")]
