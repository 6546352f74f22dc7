"""A damaged database file: moved aside, every readable row salvaged, the salvage resumed after a crash.

Owns what the agent does when its SQLite file is damaged (SQLite says SQLITE_CORRUPT /
SQLITE_NOTADB on opening, or ``PRAGMA quick_check`` finds a fault): the file (with its -wal and
-shm) is moved to ``<name>.corrupt-<UTC time>`` and kept, a fresh file is created, and every row
that can still be read, of every table of the damaged file, is copied into the fresh one. A table
its owner creates at run time (``outbox_quarantine``) is created in the fresh file from the
damaged file's ``sqlite_master``. It does not own what any table means, nor the
schema and its versions (``gateway.db``).

Reading past damage. A table is read in key order, ``CHUNK_ROWS`` rows at a time: by rowid, or by
primary key for a WITHOUT ROWID table. A damaged b-tree page makes every read that touches it fail,
but a seek past it still works: SQLite finds a key through the interior pages and reads only the
leaf it lands on. So when a chunk fails, its rows are read one by one up to the damage, then a
walk of seeks on the first key column finds the next readable stretch (``_walk``): one key at a
time at first, then by 1/1,024 of the distance walked, and from where a seek lands, a read
backwards to where its stretch begins. Damage, a sound leaf, more damage: the walk stops at the
sound leaf (a search that doubles its step, then bisects, jumped over it). Text and blob keys are
walked as the numbers their bytes make. A damaged first leaf leaves no key to walk from: the walk
starts from the last key (or the bottom of the key space) and goes downwards, then the copy goes
forwards from the first stretch found. The rowids stepped over are counted as lost: an upper
bound, since some may have been deleted before the damage; a range of other keys counts in
``uncounted_ranges``. Not recovered: a sound leaf whose keys span less than 1/1,024 of its
distance from the damage (with evenly spread keys, one past more than ~1,000 damaged leaves);
the leaves under a damaged interior page (a seek cannot reach them); in a WITHOUT ROWID table, the
keys its interior pages hold between two damaged leaves, and the text keys of a table whose first
and last leaves are both damaged (none left to walk from); everything when ``sqlite_master``
itself is unreadable. Reading raw pages (SQLite's ``.recover``) is not done here.

Crash safety. ``<name>.salvage-pending`` (JSON: the damaged files' names, each with whether it was
moved yet) is written and fsynced before the damaged file is moved, and removed only after the last
table's copy committed. While it exists, every start finishes the move and resumes the copy, even
though the fresh file passes ``quick_check``. Each chunk commits with its table's progress row
(``salvage_progress``, created here, outside the versioned schema), so a kill -9 at any moment resumes after
the last committed chunk: nothing copied twice, nothing readable left behind. Before any row is
copied the fresh file's AUTOINCREMENT counters are raised to the damaged file's, so records the
agent commits while a salvage waits for its next start (a copy that failed on a full disk) never
take the seq of a row still to be salvaged.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.db import connect, transaction
from gateway.errors import StorageError
from gateway.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

CHUNK_ROWS = 1000
"""Rows read, written and committed together (bounded memory; one progress row per commit)."""
PENDING_SUFFIX = ".salvage-pending"
PROGRESS_TABLE = "salvage_progress"

_MAX_ROWID = 2**63 - 1
_WALK_RESOLUTION = 1024
"""Seeks of a walk past damage per doubling of its distance (``_walk``): the readable leaves it finds."""
_MAX_WIDTH_BYTES = 32
"""Bytes of a text or blob key a walk tells apart (its seeks grow with them: ~5.5 x 1024 a byte)."""
_OPENING_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR")
"""Errors of a read of the damaged file that mean "this part cannot be read" (a bad SD sector
gives SQLITE_IOERR_READ): stepped over, never retried."""

_CREATE_PROGRESS = f"""CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    source    TEXT NOT NULL,               -- file name of the damaged copy
    tbl       TEXT NOT NULL,               -- table name; '' for the salvage as a whole (done when complete)
    phase     TEXT NOT NULL,               -- forward | done
    cursor    TEXT,                        -- JSON key where the next read starts; NULL: at the first row
    inclusive INTEGER NOT NULL DEFAULT 0,  -- 1: at the cursor (a key found past damage); 0: after it
    rescued   INTEGER NOT NULL DEFAULT 0,
    lost      INTEGER NOT NULL DEFAULT 0,  -- rows stepped over, estimated from key gaps
    uncounted INTEGER NOT NULL DEFAULT 0,  -- damaged ranges whose rows the keys cannot count
    damaged   INTEGER NOT NULL DEFAULT 0,  -- damaged ranges stepped over
    note      TEXT,                        -- why the file (or the rest of it) could not be read
    PRIMARY KEY (source, tbl)
) WITHOUT ROWID"""


class _Damaged(Exception):
    """A read of the damaged file hit an unreadable part."""


@dataclass(frozen=True, slots=True)
class TableSalvage:
    """What the salvage of one table gave."""

    rescued: int
    lost: int
    damaged_ranges: int
    uncounted_ranges: int

    def as_dict(self) -> dict[str, int]:
        return {
            "rescued": self.rescued,
            "lost": self.lost,
            "damaged_ranges": self.damaged_ranges,
            "uncounted_ranges": self.uncounted_ranges,
        }


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """Rows rescued and lost per table; ``complete`` False while the salvage still has to resume."""

    source: Path
    complete: bool
    tables: dict[str, TableSalvage]
    error: str | None = None

    @property
    def rescued(self) -> int:
        return sum(t.rescued for t in self.tables.values())

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``edgegw status``, ``health`` and the final counters."""
        return {
            "source": self.source.name,
            "complete": self.complete,
            "rescued": self.rescued,
            "lost": self.lost,
            "uncounted_ranges": sum(t.uncounted_ranges for t in self.tables.values()),
            "tables": {name: t.as_dict() for name, t in sorted(self.tables.items())},
            "error": self.error,
        }


def open_or_salvage(path: str | os.PathLike[str]) -> tuple[sqlite3.Connection, Path | None]:
    """``gateway.db.connect()``, but a damaged file is moved aside and salvaged (the agent's way).

    First finishes what a crash interrupted (a pending move, a pending salvage); then checks the
    file (SQLITE_CORRUPT / SQLITE_NOTADB on opening, or ``quick_check``): a damaged one is moved to
    ``<name>.corrupt-<UTC time>`` (ERROR logged), a fresh file is created and salvaged into.
    Returns the connection and the damaged copy this start moved aside or went on salvaging (None
    when the file was sound; ``read_report`` tells what its salvage gave). StorageError for any
    other failure (the caller does not start on a file it cannot open).
    """
    path = Path(path)
    pending = _Pending(path)
    try:
        entries = pending.read()
    except StorageError as exc:
        # Written atomically, so only outside damage makes it unreadable. Rather than refuse to
        # start: resume every damaged copy whose salvage into the fresh file has not completed.
        log.error("%s; resuming every damaged copy not salvaged to the end", exc)
        entries = []
        conn, _why = _open_checked(path)
        if conn is not None:
            entries = [_Entry(c.name, True) for c in _damaged_copies(path) if not _completed(conn, c.name)]
            conn.close()
        pending.write(entries)
    for entry in entries:
        if not entry.moved:
            _move(path, path.with_name(entry.name))
            entry.moved = True
            pending.write(entries)
    conn, why = _open_checked(path)
    if conn is None:
        moved = _free_name(path)
        entries.append(_Entry(moved.name, moved=False))
        pending.write(entries)  # durable before the move: a crash in it is finished next start
        _move(path, moved)
        entries[-1].moved = True
        pending.write(entries)  # durable before the fresh file exists
        log.error("DATABASE CORRUPT: %s (%s); moved to %s, starting a fresh one", path, why, moved)
        conn = connect(path)
    if not entries:
        return conn, None
    for entry in list(entries):
        if salvage(conn, path.with_name(entry.name)).complete:
            entries.remove(entry)
            pending.write(entries)  # the last one removes the marker
    return conn, path.with_name(entries[-1].name if entries else entry.name)


def read_report(conn: sqlite3.Connection, source: Path) -> SalvageReport:
    """What the salvage of ``source`` rescued and lost so far (its progress rows in ``conn``)."""
    try:
        row = conn.execute(f"SELECT note FROM {PROGRESS_TABLE} WHERE source = ? AND tbl = ''", (source.name,))
        note = row.fetchone()
    except sqlite3.OperationalError:  # no progress table: nothing was copied
        note = None
    return _report(conn, source, complete=note is not None, error=None if note is None else note[0])


def _completed(conn: sqlite3.Connection, source: str) -> bool:
    try:
        row = conn.execute(
            f"SELECT phase FROM {PROGRESS_TABLE} WHERE source = ? AND tbl = ''", (source,)
        ).fetchone()
    except sqlite3.OperationalError:  # no progress table: no salvage into this file yet
        return False
    return row is not None and row[0] == "done"


def _damaged_copies(path: Path) -> list[Path]:
    return sorted(
        p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    )


def salvage(conn: sqlite3.Connection, source: Path) -> SalvageReport:
    """Copy every readable row of ``source`` (read-only) into ``conn``'s tables, resuming from the
    progress committed by an earlier, interrupted run. Never raises for damage in ``source``; a
    failure to write ``conn`` (a full disk) ends the run with ``complete`` False."""
    error: str | None = None
    try:
        # Foreign keys off: a session whose device row was on a damaged page is still copied (its
        # frame counter protects against replays). NORMAL: a chunk needs no fsync of its own; the
        # final commit under FULL syncs the WAL with all of them before the marker goes.
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_CREATE_PROGRESS)
        error = _copy_all(conn, source)
        conn.execute("PRAGMA synchronous=FULL")
        with transaction(conn):
            conn.execute(
                f"INSERT OR REPLACE INTO {PROGRESS_TABLE} (source, tbl, phase, note) "
                "VALUES (?, '', 'done', ?)",
                (source.name, error),
            )
    except (sqlite3.Error, OSError) as exc:
        log.error("salvage of %s interrupted, it resumes at the next start: %s", source, exc)
        return _report(conn, source, complete=False, error=str(exc))
    finally:
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            log.error("database settings not restored after the salvage: %s", exc)
    report = _report(conn, source, complete=True, error=error)
    per_table = "; ".join(
        f"{name} {t.rescued} rescued, {t.lost} lost"
        + (f" ({t.uncounted_ranges} ranges uncounted)" if t.uncounted_ranges else "")
        for name, t in sorted(report.tables.items())
    )
    log.error(
        "SALVAGE of %s complete: %d rows rescued, %d lost (estimate from key gaps)%s: %s",
        source, report.rescued, report.lost, f", {error}" if error else "", per_table or "no table readable",
    )  # fmt: skip
    return report


def _copy_all(conn: sqlite3.Connection, source: Path) -> str | None:
    """Copy what can be read; returns why nothing (more) could be, None when every table was read."""
    if not source.exists():
        return "damaged file missing"
    try:
        src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        return f"cannot open it: {exc}"
    try:
        try:
            tables = _prepare(src, conn)
        except _Damaged as exc:
            return f"schema unreadable: {exc}"
        for table in tables:
            _copy_table(src, conn, source.name, table)
    finally:
        src.close()
    return None


# --- the pending marker ----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    name: str  # file name of the damaged copy, next to the database
    moved: bool  # False: the move may have been interrupted, finish it before opening anything


class _Pending:
    """``<db>.salvage-pending``: the damaged copies whose salvage is not complete."""

    def __init__(self, db_file: Path) -> None:
        self.path = db_file.with_name(db_file.name + PENDING_SUFFIX)

    def read(self) -> list[_Entry]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return [_Entry(str(e["name"]), bool(e["moved"])) for e in doc["pending"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"salvage marker {self.path} unreadable ({exc})") from exc

    def write(self, entries: Sequence[_Entry]) -> None:
        try:
            if entries:
                doc = {"pending": [{"name": e.name, "moved": e.moved} for e in entries]}
                write_atomic(self.path, json.dumps(doc).encode(), mode=0o600)
            elif self.path.exists():
                self.path.unlink()
                fsync_dir(self.path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write the salvage marker {self.path}: {exc}") from exc


def _free_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while Path(f"{moved}").exists() or Path(f"{moved}-wal").exists():
        n += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return moved


def _move(path: Path, moved: Path) -> None:
    """Rename the file and its -wal and -shm; the main file last, so its presence at ``moved``
    means the move is whole. Resumable: what is already moved is left alone."""
    if moved.exists():
        return
    try:
        for suffix in ("-wal", "-shm", ""):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(f"{moved}{suffix}")
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"database {path} is damaged and cannot be moved aside: {exc}") from exc


def _open_checked(path: Path) -> tuple[sqlite3.Connection | None, str]:
    """The connection when the file is sound, else (None, why it is damaged)."""
    try:
        conn = connect(path)
        fault = conn.execute("PRAGMA quick_check").fetchone()[0]
        if fault == "ok":
            return conn, ""
        conn.close()
        return None, f"quick_check: {fault}"
    except StorageError as exc:
        cause = exc.__cause__
        if isinstance(cause, sqlite3.DatabaseError) and _errorname(cause) in _OPENING_CORRUPT:
            return None, str(cause)
        raise
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _OPENING_CORRUPT:
            raise StorageError(f"cannot check database {path}: {exc}") from exc
        return None, str(exc)


# --- the copy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    keys: tuple[str, ...]  # SQL of the key columns: ("rowid",), or the primary key of a WITHOUT ROWID table
    columns: tuple[str, ...]  # quoted names of the columns both files have
    sequence: int | None  # the damaged file's AUTOINCREMENT counter, if it could be read
    key_kind: str  # _kind() of the first key column by its declared type: "int", "text", "blob" or ""

    @property
    def by_rowid(self) -> bool:
        return self.keys == ("rowid",)


@dataclass(frozen=True, slots=True)
class _Progress:
    phase: str = "forward"
    cursor: str | None = None
    inclusive: int = 0
    rescued: int = 0
    lost: int = 0
    uncounted: int = 0
    damaged: int = 0


@dataclass(frozen=True, slots=True)
class _Bound:
    """Where a read in key order starts: after ``key``, or at it when ``inclusive``; None: at the start."""

    key: tuple[Any, ...] | None
    inclusive: bool = False


def _prepare(src: sqlite3.Connection, conn: sqlite3.Connection) -> list[_Table]:
    """The tables to copy; creates in ``conn`` those only the damaged file has (with their indexes),
    and raises ``conn``'s AUTOINCREMENT counters to the damaged file's."""
    master = _read(src, "SELECT type, name, tbl_name, sql FROM sqlite_master")
    sources = [
        (name, sql)
        for kind, name, _tbl, sql in master
        if kind == "table" and sql and not name.startswith("sqlite_") and name != PROGRESS_TABLE
        and not str(sql).upper().startswith("CREATE VIRTUAL")
    ]  # fmt: skip
    fresh = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    try:
        sequences = {str(n): int(s) for n, s in _read(src, "SELECT name, seq FROM sqlite_sequence")}
    except (_Damaged, sqlite3.OperationalError) as exc:  # damaged, or no AUTOINCREMENT table at all
        log.warning("salvage: AUTOINCREMENT counters of the damaged file not read: %s", exc)
        sequences = {}
    tables: list[_Table] = []
    with transaction(conn):
        for name, sql in sources:
            if name not in fresh:
                # A table its owner creates at run time (after the database is open): create it
                # now from the damaged file's own statement, so its rows have somewhere to go.
                try:
                    conn.execute(sql)
                except sqlite3.Error as exc:
                    log.error("salvage: table %s not copied, its CREATE failed: %s", name, exc)
                    continue
                for kind, index, tbl, index_sql in master:
                    if kind == "index" and tbl == name and index_sql:
                        try:
                            conn.execute(index_sql)
                        except sqlite3.Error as exc:  # the rows matter, the index is only speed
                            log.error("salvage: index %s of %s not created: %s", index, name, exc)
            try:
                tables.append(_describe(src, conn, name, sequences.get(name)))
            except _Damaged as exc:
                log.error("salvage: table %s not copied, its columns are unreadable: %s", name, exc)
        for name, seq in sequences.items():
            if any(t.name == name for t in tables):
                _raise_sequence(conn, name, seq)
    return tables


def _describe(src: sqlite3.Connection, conn: sqlite3.Connection, name: str, sequence: int | None) -> _Table:
    old = _read(src, f"PRAGMA table_info({_quote(name)})")
    new = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({_quote(name)})")}
    columns = tuple(_quote(str(r[1])) for r in old if str(r[1]) in new)
    listed = _read(src, "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,))
    if not (listed and listed[0][0]):
        return _Table(name, ("rowid",), columns, sequence, "int")
    # WITHOUT ROWID: the primary key, and the kind of its first column by the affinity of its
    # declared type (sqlite.org/datatype3.html §3.1); "": REAL or NUMERIC, not walked.
    pk = sorted((int(r[5]), str(r[1]), str(r[2]).upper()) for r in old if int(r[5]) > 0)
    declared = pk[0][2] if pk else ""
    if "INT" in declared:
        kind = "int"
    elif any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        kind = "text"
    elif "BLOB" in declared or not declared:
        kind = "blob"
    else:
        kind = ""
    return _Table(name, tuple(_quote(col) for _pos, col, _type in pk), columns, sequence, kind)


def _raise_sequence(conn: sqlite3.Connection, name: str, seq: int) -> None:
    # sqlite_sequence has no key on name: update, or insert when the table has no row yet.
    update = "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?"
    if not conn.execute(update, (seq, name)).rowcount:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))


def _copy_table(src: sqlite3.Connection, conn: sqlite3.Connection, source: str, table: _Table) -> None:
    progress = _load_progress(conn, source, table.name)
    insert = (
        f"INSERT OR IGNORE INTO {_quote(table.name)} ({', '.join(table.columns)}) "
        f"VALUES ({', '.join('?' * len(table.columns))})"
    )
    nkeys = len(table.keys)
    while progress.phase != "done":
        rows, progress = _forward(src, table, progress)
        with transaction(conn):
            if rows and table.columns:
                conn.executemany(insert, (row[nkeys:] for row in rows))
            _save_progress(conn, source, table.name, progress)


def _forward(src: sqlite3.Connection, table: _Table, p: _Progress) -> tuple[list[tuple[Any, ...]], _Progress]:
    """The next chunk in key order; at damage, the rows before it and a step over it."""
    start = _Bound(_load_key(p.cursor), bool(p.inclusive))
    if table.by_rowid and start.key is not None and not start.inclusive and start.key[0] >= _MAX_ROWID:
        return [], replace(p, phase="done")
    rows, damaged = _read_chunk(src, table, start)
    end = _Bound(tuple(rows[-1][: len(table.keys)])) if rows else start
    p = replace(p, cursor=_dump_key(end.key), inclusive=int(end.inclusive), rescued=p.rescued + len(rows))
    if not damaged:
        return rows, replace(p, phase="done") if len(rows) < CHUNK_ROWS else p
    return rows, _step_over(src, table, p, end)


def _read_chunk(src: sqlite3.Connection, table: _Table, start: _Bound) -> tuple[list[tuple[Any, ...]], bool]:
    """Up to CHUNK_ROWS rows (keys, then columns) from ``start`` in key order; on damage, the rows
    before it one by one. Returns (rows, whether damage stopped it)."""
    keys = ", ".join(table.keys)
    select = f"SELECT {keys}, {', '.join(table.columns) or 'NULL'} FROM {_quote(table.name)}"

    def query(bound: _Bound, limit: int) -> tuple[str, tuple[Any, ...]]:
        where, args = _from(table, bound)
        return f"{select} {_where(where)} ORDER BY {keys} LIMIT ?", (*args, limit)

    try:
        return [tuple(r) for r in src.execute(*query(start, CHUNK_ROWS))], False
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _DAMAGE:
            raise
    rows: list[tuple[Any, ...]] = []
    bound = start
    while len(rows) < CHUNK_ROWS:
        try:
            row = src.execute(*query(bound, 1)).fetchone()
        except sqlite3.DatabaseError as exc:
            if _errorname(exc) not in _DAMAGE:
                raise
            # A key found past damage by reading backwards (``_walk``) may be one no seek reaches:
            # in a WITHOUT ROWID table's b-tree, a key of an interior page whose left child is
            # damaged (a seek for it descends to the left). A backward read reaches it.
            row = _row_at(src, table, select, bound) if bound.inclusive else None
            if row is None:
                return rows, True
        if row is None:
            break
        rows.append(tuple(row))
        bound = _Bound(tuple(row[: len(table.keys)]))
    return rows, False


def _row_at(src: sqlite3.Connection, table: _Table, select: str, bound: _Bound) -> tuple[Any, ...] | None:
    """The row whose key is ``bound.key``, read backwards (None: damaged, or no such row)."""
    assert bound.key is not None
    keys = ", ".join(table.keys)
    desc = ", ".join(f"{k} DESC" for k in table.keys)
    where = f"({keys}) <= ({_marks(bound.key)}) AND ({keys}) >= ({_marks(bound.key)})"
    try:
        row = src.execute(
            f"{select} WHERE {where} ORDER BY {desc} LIMIT 1", (*bound.key, *bound.key)
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _DAMAGE:
            raise
        return None
    return None if row is None else tuple(row)


def _step_over(src: sqlite3.Connection, table: _Table, p: _Progress, start: _Bound) -> _Progress:
    """Past the damage that stopped a read from ``start``: the progress that resumes at the next
    key a seek can reach (inclusive), the range in between counted as lost by its rowid gap, or
    as one uncounted range when the keys are not rowids."""
    keys = ", ".join(table.keys)
    where, args = _from(table, start)
    ok, nxt = _probe(
        src, f"SELECT {keys} FROM {_quote(table.name)} {_where(where)} ORDER BY {keys} LIMIT 1", args
    )
    found = _walk(src, table, start) if not ok else None
    if ok or (found is not None and start.inclusive and found == start.key):
        # Its key is readable, its record is not (a damaged record or overflow page): that row only.
        skipped = nxt if ok else found
        if skipped is None:
            return replace(p, phase="done")
        return replace(p, cursor=_dump_key(skipped), inclusive=0, lost=p.lost + 1, damaged=p.damaged + 1)
    p = replace(p, damaged=p.damaged + 1)
    if not table.by_rowid:
        p = replace(p, uncounted=p.uncounted + 1)
        return replace(p, phase="done") if found is None else replace(p, cursor=_dump_key(found), inclusive=1)
    # The last rowid handled; rowids start at 1, so a damaged first leaf loses 1 .. next - 1.
    base = 0 if start.key is None else int(start.key[0]) - int(start.inclusive)
    if found is None:
        # Damaged to the end: the AUTOINCREMENT counter, when there is one, bounds what was there.
        if table.sequence is not None and table.sequence > base:
            return replace(p, phase="done", lost=p.lost + table.sequence - base)
        return replace(p, phase="done", uncounted=p.uncounted + 1)
    return replace(p, cursor=_dump_key(found), inclusive=1, lost=p.lost + max(0, int(found[0]) - base - 1))


def _walk(src: sqlite3.Connection, table: _Table, start: _Bound) -> tuple[Any, ...] | None:
    """The first key of the next readable stretch of the table past the damage after ``start``
    (None: nothing more can be reached).

    Seeks on the first key column, stepping away from the damage: one key at a time for the
    first _WALK_RESOLUTION keys, then by 1/_WALK_RESOLUTION of the distance walked. The first
    seek that lands on a readable leaf ends the walk, and a read backwards from there finds
    where its stretch begins (a step may have jumped into it). So every readable leaf is found
    whose keys span at least 1/_WALK_RESOLUTION of its distance from the damage: with evenly
    spread keys, every one after fewer than ~_WALK_RESOLUTION damaged leaves. Upwards, the walk
    ends at the last key (when the last leaf is readable), else at the AUTOINCREMENT counter,
    else at the end of the key space (~40 x _WALK_RESOLUTION seeks for rowids). A damaged
    first leaf leaves no key to start from: the stretch found from the last key (or from the
    bottom of the key space) is the start of walks downwards, repeated down to the first."""
    keys = ", ".join(table.keys)
    desc = ", ".join(f"{k} DESC" for k in table.keys)
    readable_end, last = _probe(src, f"SELECT {keys} FROM {_quote(table.name)} ORDER BY {desc} LIMIT 1", ())
    if readable_end and last is None:
        return None
    if start.key is not None:
        return _walk_up(src, table, start, last)
    if last is not None:
        first: tuple[Any, ...] | None = _down_from(
            src, table, last, (f"({keys}) < ({_marks(last)})", last), ([], ())
        )
    else:
        first = _walk_up(src, table, start, None)
    while first is not None and (lower := _walk_down(src, table, first)) is not None:
        first = lower
    return first


def _walk_up(
    src: sqlite3.Connection, table: _Table, start: _Bound, last: tuple[Any, ...] | None
) -> tuple[Any, ...] | None:
    """``_walk`` upwards from ``start`` (None: from the bottom) to ``last`` (the last key, if readable)."""
    scale = _Scale.of(table, start.key, last)
    if scale is None:
        return None
    if start.key is None:
        low = 0  # not below: SQLite never gives a row a rowid below 1 itself
    else:
        at = scale.number(start.key[0])
        if at is None:  # a key of another kind than the table's (a REAL in an INTEGER column)
            return None
        # From the start key itself only when it is the whole key and can be sought exactly.
        low = at if start.inclusive and len(table.keys) == 1 and scale.kind == "int" else at + 1
    top = scale.top
    end = None if last is None else scale.number(last[0])
    if end is not None:
        top = end
    elif table.by_rowid and table.sequence is not None:
        top = table.sequence
    if top < low:
        return None
    name = _quote(table.name)
    keys = ", ".join(table.keys)
    seek = f"SELECT {keys} FROM {name} WHERE {table.keys[0]} >= {scale.marker} ORDER BY {keys} LIMIT 1"
    at = low
    while True:
        reachable, found = _probe(src, seek, (scale.value(at),))
        if reachable:
            break
        if at >= top:
            return None
        at = min(top, at + 1 + (at - low) // _WALK_RESOLUTION)
    # The readable stretch may begin before the seek's point: read it backwards down to the
    # damage, from the key found (or the point, when the seek went past the last key).
    if found is None:
        upper = f"{table.keys[0]} < {scale.marker}", (scale.value(at),)
    else:
        upper = f"({keys}) < ({_marks(found)})", found
    return _down_from(src, table, found, upper, _from(table, start))


def _walk_down(src: sqlite3.Connection, table: _Table, first: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``_walk`` downwards from a stretch that begins at ``first``, to the bottom of the key space
    (0 for integers: SQLite never gives a row a rowid below 1 itself): the first key of the
    readable stretch found below, or None."""
    scale = _Scale.of(table, first)
    high = None if scale is None else scale.number(first[0])
    if scale is None or high is None or high <= 0:
        return None
    name = _quote(table.name)
    keys = ", ".join(table.keys)
    desc = ", ".join(f"{k} DESC" for k in table.keys)
    high -= 1
    seek = f"SELECT {keys} FROM {name} WHERE {table.keys[0]} <= {scale.marker} ORDER BY {desc} LIMIT 1"
    at = high
    while True:
        reachable, found = _probe(src, seek, (scale.value(at),))
        if reachable:
            break
        if at <= 0:
            return None
        at = max(0, at - 1 - (high - at) // _WALK_RESOLUTION)
    if found is None:
        # Nothing at or below the point, and the leaf it lies in is readable: the table's first
        # rows, if any, lie between the point and ``first``.
        above = (
            f"SELECT {keys} FROM {name} WHERE {table.keys[0]} > {scale.marker} "
            f"AND ({keys}) < ({_marks(first)}) ORDER BY {keys} LIMIT 1"
        )
        reachable, lowest = _probe(src, above, (scale.value(at), *first))
        return lowest if reachable else None
    return _down_from(src, table, found, (f"({keys}) < ({_marks(found)})", found), ([], ()))


def _down_from(
    src: sqlite3.Connection,
    table: _Table,
    first: tuple[Any, ...] | None,
    upper: tuple[str, tuple[Any, ...]],
    lower: tuple[list[str], tuple[Any, ...]],
) -> tuple[Any, ...] | None:
    """The lowest key read backwards, keys only, below ``upper`` (an SQL condition and its
    arguments) and within ``lower`` (conditions and arguments), down to the damage; ``first``
    when there is none."""
    name = _quote(table.name)
    keys = ", ".join(table.keys)
    desc = ", ".join(f"{k} DESC" for k in table.keys)
    conditions, args = lower

    def below(condition: str, condition_args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        sql = f"SELECT {keys} FROM {name} {_where([condition, *conditions])} ORDER BY {desc}"
        return sql, (*condition_args, *args)

    try:
        for row in src.execute(*below(*upper)):
            first = tuple(row)
        return first
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _DAMAGE:
            raise
    # The damage: Python's sqlite3 reads one row ahead, so the row before it was dropped. One by
    # one (LIMIT 1 reads no further) from the last key received down to the damage.
    while True:
        sql, sql_args = below(*upper) if first is None else below(f"({keys}) < ({_marks(first)})", first)
        reachable, row = _probe(src, f"{sql} LIMIT 1", sql_args)
        if not reachable or row is None:
            return first
        first = row


@dataclass(frozen=True, slots=True)
class _Scale:
    """The values of a table's first key column as integers, for a walk to step through: an
    integer as itself, a text (UTF-8) or a blob as the number its first ``width`` bytes make."""

    kind: str  # "int" | "text" | "blob"
    width: int = 0

    @staticmethod
    def of(table: _Table, *keys: tuple[Any, ...] | None) -> _Scale | None:
        """The scale of the kind of the keys known (else of the column's declared type), as wide
        as the longest of them; None for keys that cannot be walked (REAL, NULL)."""
        values = [key[0] for key in keys if key is not None]
        kind = _kind(values[0]) if values else table.key_kind
        if kind == "int":
            return _Scale(kind)
        if kind in ("text", "blob"):
            width = max((len(_raw(v)) for v in values if _kind(v) == kind), default=16)
            return _Scale(kind, min(max(width, 1), _MAX_WIDTH_BYTES))
        return None

    def number(self, value: Any) -> int | None:
        """``value`` as a point of the scale; None for a value of another kind."""
        if _kind(value) != self.kind:
            return None
        if self.kind == "int":
            return int(value)
        return int.from_bytes(_raw(value)[: self.width].ljust(self.width, b"\0"), "big")

    def value(self, number: int) -> int | bytes:
        """The value sought for a point of the scale (bound with ``marker``)."""
        return number if self.kind == "int" else number.to_bytes(self.width, "big").rstrip(b"\0")

    @property
    def top(self) -> int:
        return _MAX_ROWID if self.kind == "int" else 256**self.width - 1

    @property
    def marker(self) -> str:
        # A text point is bound as bytes and cast: it need not be valid UTF-8, and texts compare
        # by their bytes (the BINARY collation).
        return "CAST(? AS TEXT)" if self.kind == "text" else "?"


def _kind(value: Any) -> str:
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "text"
    return "blob" if isinstance(value, bytes) else ""


def _raw(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def _from(table: _Table, bound: _Bound) -> tuple[list[str], tuple[Any, ...]]:
    """The SQL condition (a list of none or one) and its arguments of the keys from ``bound`` on."""
    if bound.key is None:
        return [], ()
    keys = ", ".join(table.keys)
    return [f"({keys}) {'>=' if bound.inclusive else '>'} ({_marks(bound.key)})"], bound.key


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _probe(src: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> tuple[bool, tuple[Any, ...] | None]:
    """(reachable, the row or None when there is none); unreachable on damage."""
    try:
        row = src.execute(sql, args).fetchone()
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _DAMAGE:
            raise
        return False, None
    return True, None if row is None else tuple(row)


# --- progress rows and the report ------------------------------------------------------------


def _load_progress(conn: sqlite3.Connection, source: str, table: str) -> _Progress:
    row = conn.execute(
        f"SELECT phase, cursor, inclusive, rescued, lost, uncounted, damaged FROM {PROGRESS_TABLE} "
        "WHERE source = ? AND tbl = ?",
        (source, table),
    ).fetchone()
    return _Progress() if row is None else _Progress(*row)


def _save_progress(conn: sqlite3.Connection, source: str, table: str, p: _Progress) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO {PROGRESS_TABLE} "
        "(source, tbl, phase, cursor, inclusive, rescued, lost, uncounted, damaged) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (source, table, p.phase, p.cursor, p.inclusive, p.rescued, p.lost, p.uncounted, p.damaged),
    )


def _report(conn: sqlite3.Connection, source: Path, *, complete: bool, error: str | None) -> SalvageReport:
    try:
        rows = conn.execute(
            f"SELECT tbl, rescued, lost, damaged, uncounted FROM {PROGRESS_TABLE} "
            "WHERE source = ? AND tbl != ''",
            (source.name,),
        ).fetchall()
    except sqlite3.Error:  # no progress table: nothing was copied
        rows = []
    tables = {str(t): TableSalvage(int(r), int(lost), int(d), int(u)) for t, r, lost, d, u in rows}
    return SalvageReport(source, complete, tables, error)


# --- small helpers ---------------------------------------------------------------------------


def _read(src: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in src.execute(sql, args)]
    except sqlite3.DatabaseError as exc:
        if _errorname(exc) not in _DAMAGE:
            raise
        raise _Damaged(str(exc)) from exc


def _errorname(exc: sqlite3.Error) -> str:
    """The primary SQLite error name (``SQLITE_IOERR_READ`` → ``SQLITE_IOERR``)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    parts = name.split("_")
    return "_".join(parts[:2]) if len(parts) > 2 else name


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _marks(key: tuple[Any, ...]) -> str:
    return ", ".join("?" * len(key))


def _dump_key(key: tuple[Any, ...] | None) -> str | None:
    if key is None:
        return None
    return json.dumps([{"hex": v.hex()} if isinstance(v, bytes) else v for v in key])


def _load_key(text: str | None) -> tuple[Any, ...] | None:
    if text is None:
        return None
    return tuple(bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in json.loads(text))
