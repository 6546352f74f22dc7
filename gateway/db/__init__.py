"""The agent's one SQLite database: connection settings and versioned schema.

Owns opening the file (WAL, ``synchronous=FULL``, file mode 0600) and every table's
creation, in two kinds of step:

- a schema version (``PRAGMA user_version``, one ``schema_vN.sql`` per version, each applied
  in one transaction): a change an earlier agent could not work with. A file newer than this
  code is refused, never downgraded;
- a compatible addition (``ADDITIONS``, one ``schema_add_<name>.sql`` each, recorded in the
  ``schema_additions`` table): a new table, or a nullable column, that earlier agents simply ignore. It keeps
  ``user_version``, so that an agent update that fails its health check can roll back to the
  previous release on the same file (docs/fleet.md); a version bump would make that release
  refuse it.

It does not own any table's meaning: the device registry, the LoRaWAN sessions, the outbox, the
rules' state and what was heard from each device (``device_state``) each own theirs.

One file holds all three so that a record and the frame counter that accepted
it commit in the same transaction (see ``gateway.db.commit``). A damaged file is
moved aside and salvaged by ``gateway.db.salvage``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from gateway.errors import StorageError

log = logging.getLogger(__name__)

DB_FILENAME = "edgegw.sqlite"
SCHEMA_VERSION = 1
ADDITIONS: tuple[str, ...] = (
    "rules_state", "device_state", "device_class", "multicast", "adr", "mac_version", "multicast_retired",
    "home", "registry_push",
)  # fmt: skip
"""Compatible additions in the order they are applied (``schema_add_<name>.sql``); append only."""
_ADDITIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_additions (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
)


def db_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / DB_FILENAME


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    The connection is in autocommit mode (``isolation_level=None``): writers use
    explicit ``BEGIN IMMEDIATE`` / ``COMMIT`` so a batch is one transaction.
    ``check_same_thread`` is off because the agent hands the connection to its
    single database thread; never use one connection from two threads at once.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Create it private: it holds device keys (ARCHITECTURE.md §3.5).
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when COMMIT returns. This is what makes a
        # record "accepted" (ARCHITECTURE.md §3.3); group commit keeps it cheap.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot prepare database {path}: {exc}") from exc
    return conn


def connect_or_quarantine(path: str | os.PathLike[str]) -> tuple[sqlite3.Connection, Path | None]:
    """``connect()``, but a damaged file is moved aside and every readable row salvaged into a fresh
    one (the agent's way, ``gateway.db.salvage``); an interrupted salvage is resumed first. Returns
    the connection and the damaged copy (None when the file was sound)."""
    from gateway.db.salvage import open_or_salvage  # salvage builds on connect() and transaction() here

    return open_or_salvage(path)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` and apply the compatible additions this agent knows;
    refuse a database from an agent of a newer schema version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} has schema version {version}, newer than this agent's {SCHEMA_VERSION}: "
            "refusing to downgrade (install the newer agent, or move the file away)"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        script = resources.files(__package__).joinpath(f"schema_v{target}.sql").read_text(encoding="utf-8")
        log.info("migrating %s to schema version %d", path, target)
        with transaction(conn):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
    _add(conn, path)


def _add(conn: sqlite3.Connection, path: Path) -> None:
    """The compatible additions not yet recorded in the file, each in one transaction with its record.

    Additions a newer agent recorded and this one does not know stay as they are (their tables
    are unused here, and kept for when that agent runs again)."""
    conn.execute(_ADDITIONS_TABLE)
    done = {name for (name,) in conn.execute("SELECT name FROM schema_additions")}
    for name in ADDITIONS:
        if name in done:
            continue
        script = resources.files(__package__).joinpath(f"schema_add_{name}.sql").read_text(encoding="utf-8")
        with transaction(conn):
            # Looked again under the write lock: the CLI and the agent may open a file at the same
            # moment, and an ALTER TABLE ... ADD COLUMN cannot say IF NOT EXISTS.
            if conn.execute("SELECT 1 FROM schema_additions WHERE name = ?", (name,)).fetchone():
                continue
            log.info("adding %s to %s", name, path)
            for statement in _statements(script):
                conn.execute(statement)
            # OR IGNORE: never needed after the check above; a duplicate must not undo the addition.
            conn.execute(
                "INSERT OR IGNORE INTO schema_additions (name, applied_at)"
                " VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ'))",
                (name,),
            )


def _statements(script: str) -> list[str]:
    """Split a schema file into statements (ours have no '--' or ';' inside literals)."""
    body = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` and re-raise on any exception.

    IMMEDIATE takes the write lock at once, so a CLI command and the running agent
    never interleave half-done writes on the shared file. SQLITE_FULL (and a few other
    errors) roll the transaction back by themselves: ROLLBACK only when one is still open.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
