"""A damaged database file: real page corruption, kill -9 during the salvage, the agent delivering
what was salvaged (issue 16, finding 2; docs/outbox.md "A damaged database file").

The file is built by the agent's own code (Database, Outbox and its GroupCommitter, the device
registry, the rules state and the outbox quarantine), 50,000 outbox rows, closed; then one 4 KiB
leaf page of the outbox table at ~10 % of the file is overwritten with random bytes. The test
reads the rowids that page held before destroying it (the b-tree leaf format, sqlite.org/fileformat2
§1.6), so it knows exactly which rows are gone: every other row must come through.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import db, rules_state
from gateway.db import salvage
from gateway.db.commit import Database
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui, Priority, Record
from gateway.outbox import Outbox
from gateway.provisioning import registry
from tests.e2e.harness import GATEWAY_ID, AgentProcess, make_device, minimal_config
from tests.outbox.helpers import committed_outbox

ROWS = 50_000
DEVICES = 3
Rows = dict[Any, tuple[Any, ...]]


@dataclass(frozen=True)
class DamagedFile:
    """A damaged agent database and what it held before the damage."""

    path: Path
    tables: dict[str, Rows]  # table → primary key → row, before the damage
    damaged_seqs: frozenset[int]  # the outbox rows the overwritten page held

    def copy_to(self, data_dir: Path) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        target = db.db_path(data_dir)
        shutil.copyfile(self.path, target)
        return target

    def readable(self, table: str) -> Rows:
        """What a salvage must bring back of ``table``: all of it but the damaged page."""
        rows = self.tables[table]
        if table != "outbox":
            return rows
        return {k: v for k, v in rows.items() if k not in self.damaged_seqs}


KEYS = {
    "devices": "dev_eui",
    "sessions": "dev_eui",
    "outbox": "seq",
    "outbox_meta": "key",
    "outbox_quarantine": "seq",
    "rules_state": "key",
}


def read_tables(path: Path) -> dict[str, Rows]:
    """Every row of the tables the test checks, keyed by primary key (through its own connection)."""
    with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as conn:
        tables: dict[str, Rows] = {}
        for table, key in KEYS.items():
            cursor = conn.execute(f"SELECT * FROM {table}")
            index = [d[0] for d in cursor.description].index(key)
            tables[table] = {row[index]: tuple(row) for row in cursor}
    conn.close()
    return tables


def reading(i: int) -> Record:
    body = {
        "id": f"rec-{i:06d}",
        "kind": "reading",
        "dev_eui": "70b3d57ed0000001",
        "data": {"n": i, "pad": "x" * 150},
    }
    return Record(record_id=str(body["id"]), kind="reading", priority=Priority.READING, body=body)


async def build_agent_file(path: Path) -> None:
    """The agent's own code writes every table: registry, outbox (+ quarantine), rules state."""
    database = Database(path)
    try:
        for n in range(1, DEVICES + 1):
            device = make_device(n)
            database.run_sync(
                lambda c, d=device: registry.add_device(
                    c, dev_eui=DevEui(d.dev_eui), profile=d.profile,
                    keys=registry.AbpKeys(DevAddr(d.dev_addr), AesKey(d.nwk_s_key), AesKey(d.app_s_key)),
                )
            )  # fmt: skip
        database.run_sync(
            lambda c: registry.add_device(
                c, dev_eui=DevEui.from_hex("70b3d57ed00000ff"), profile="milesight/em310-udl",
                keys=registry.OtaaKeys(JoinEui.from_hex("70b3d57ed0000000"), AesKey(bytes(range(16)))),
            )
        )  # fmt: skip
        outbox, committer = committed_outbox(database, max_pending=100_000)
        for i in range(ROWS):
            outbox.put(reading(i))
            if i % 2_000 == 1_999:
                await committer.flush()
        await committer.flush()
        # One row the broker could never take: moved to outbox_quarantine (created at run time).
        (leased,) = await outbox.lease(1)
        outbox.quarantine([leased.seq], "too_big")
        await committer.flush()
        # The rules' state, a WITHOUT ROWID table (a compatible addition of the schema).
        states = {make_device(n).dev_eui.hex(): {"episodes": {"high": n}} for n in range(1, DEVICES + 1)}
        database.run_sync(rules_state._write_now, (states, {"tick": 7}))
    finally:
        database.close()


def leaf_rowids(page: bytes) -> list[int]:
    """The rowids of a table b-tree leaf page (type 13): cell pointers at offset 8, each cell a
    varint payload size then a varint rowid (sqlite.org/fileformat2.html §1.6)."""
    assert page[0] == 13, f"not a table leaf page (type {page[0]})"
    cells = int.from_bytes(page[3:5], "big")
    rowids = []
    for i in range(cells):
        offset = int.from_bytes(page[8 + 2 * i : 10 + 2 * i], "big")
        _size, offset = _varint(page, offset)
        rowid, _ = _varint(page, offset)
        rowids.append(rowid)
    return rowids


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        byte = data[offset + i]
        if i == 8:
            return (value << 8) | byte, offset + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, offset + i + 1
    raise AssertionError("unreachable")


def damage_outbox_page(path: Path) -> frozenset[int]:
    """Overwrite the outbox leaf page nearest 10 % of the file with random bytes; its rowids."""
    with sqlite3.connect(path) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        leaves = [
            r[0]
            for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'outbox' AND pagetype = 'leaf'")
        ]
    conn.close()
    target = min(leaves, key=lambda page: abs(page - pages // 10))
    assert target > 1
    with path.open("r+b") as f:
        f.seek((target - 1) * page_size)
        rowids = leaf_rowids(f.read(page_size))
        f.seek((target - 1) * page_size)
        f.write(random.Random(16).randbytes(page_size))
    return frozenset(rowids)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> DamagedFile:
    path = db.db_path(tmp_path_factory.mktemp("built"))
    asyncio.run(build_agent_file(path))
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    tables = read_tables(path)
    assert len(tables["outbox"]) == ROWS - 1 and len(tables["outbox_quarantine"]) == 1
    assert len(tables["devices"]) == DEVICES + 1 and len(tables["sessions"]) == DEVICES
    damaged_seqs = damage_outbox_page(path)
    assert 0 < len(damaged_seqs) <= 200 and damaged_seqs <= tables["outbox"].keys()
    with sqlite3.connect(path) as conn:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute("SELECT COUNT(*), SUM(length(body)) FROM outbox").fetchone()  # really damaged
    conn.close()
    return DamagedFile(path, tables, damaged_seqs)


def assert_everything_readable_came_back(damaged: DamagedFile, path: Path) -> None:
    now = read_tables(path)
    for table in KEYS:
        expected = damaged.readable(table)
        missing = expected.keys() - now[table].keys()
        assert not missing, f"{table}: {len(missing)} readable rows not salvaged, e.g. {sorted(missing)[:5]}"
        assert {k: now[table][k] for k in expected} == expected, f"{table}: salvaged rows differ"
    assert not damaged.damaged_seqs & now["outbox"].keys()  # they were unreadable: nothing invented


def pending_marker(path: Path) -> Path:
    return path.with_name(path.name + salvage.PENDING_SUFFIX)


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(
        p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    )


# --- one damaged page ------------------------------------------------------------------------


def test_one_damaged_page_loses_only_the_rows_it_held(damaged: DamagedFile, tmp_path: Path) -> None:
    path = damaged.copy_to(tmp_path / "data")
    started = time.monotonic()
    database = Database(path)
    elapsed_s = time.monotonic() - started
    try:
        report = database.salvage
        assert database.quarantined is not None and report is not None
    finally:
        database.close()
    assert_everything_readable_came_back(damaged, path)
    again = Database(path)  # the next start: a sound file, the agent's own again
    try:
        assert again.quarantined is None and again.salvage is None
        assert Outbox(again).depth == ROWS - 1 - len(damaged.damaged_seqs)
    finally:
        again.close()
    outbox = report.tables["outbox"]
    assert report.complete and outbox.rescued == ROWS - 1 - len(damaged.damaged_seqs)
    assert outbox.lost == len(damaged.damaged_seqs) and outbox.damaged_ranges == 1  # the seq gap
    assert (
        report.tables["devices"].rescued == DEVICES + 1
        and report.tables["rules_state"].rescued == DEVICES + 1
    )
    assert not pending_marker(path).exists() and corrupt_copies(path) == [database.quarantined]
    print(f"\nsalvage of {ROWS - 1} outbox rows: {outbox.rescued} rescued, {outbox.lost} lost "
          f"({len(damaged.damaged_seqs)} on the damaged page), {elapsed_s:.2f} s")  # fmt: skip


def index_leaf_first_texts(page: bytes) -> list[str]:
    """The first column (TEXT) of each cell of an index b-tree leaf page (type 10), which is what a
    WITHOUT ROWID table's leaves are: varint payload size, then the record (header size, serial
    types, values; sqlite.org/fileformat2.html §1.6, §2.1). Cells must not overflow."""
    assert page[0] == 10, f"not an index leaf page (type {page[0]})"
    return _index_first_texts(page, header=8, child=0)


def index_interior_first_texts(page: bytes) -> list[str]:
    """The same for an index b-tree interior page (type 2): its cells are keys too, each after the
    4-byte number of its left child (§1.6)."""
    assert page[0] == 2, f"not an index interior page (type {page[0]})"
    return _index_first_texts(page, header=12, child=4)


def _index_first_texts(page: bytes, header: int, child: int) -> list[str]:
    keys = []
    for i in range(int.from_bytes(page[3:5], "big")):
        offset = int.from_bytes(page[header + 2 * i : header + 2 + 2 * i], "big") + child
        _size, record = _varint(page, offset)
        header_size, cursor = _varint(page, record)
        serial, _ = _varint(page, cursor)
        assert serial >= 13 and serial % 2 == 1, "first column is not TEXT"
        start = record + header_size
        keys.append(page[start : start + (serial - 13) // 2].decode())
    return keys


def test_a_without_rowid_table_loses_only_the_keys_of_its_damaged_page(tmp_path: Path) -> None:
    """rules_state (text keys, no rowid): the walk past its damaged page goes by primary key."""
    path = db.db_path(tmp_path / "data")
    database = Database(path)
    states = {f"{n:016x}": {"episodes": {"high": n, "pad": "s" * 60}} for n in range(3000)}
    database.run_sync(rules_state._write_now, (states, None))
    database.close()
    with sqlite3.connect(path) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        leaves = [
            r[0]
            for r in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'rules_state' AND pagetype = 'leaf'"
            )
        ]
    conn.close()
    target = leaves[len(leaves) // 2]
    with path.open("r+b") as f:
        f.seek((target - 1) * page_size)
        on_page = set(index_leaf_first_texts(f.read(page_size)))
        f.seek((target - 1) * page_size)
        f.write(random.Random(10).randbytes(page_size))
    assert 0 < len(on_page) < 100

    database = Database(path)
    try:
        report = database.salvage
        salvaged = set(database.run_sync(lambda c: [r[0] for r in c.execute("SELECT key FROM rules_state")]))
    finally:
        database.close()
    assert salvaged == states.keys() - on_page
    assert report is not None and report.complete
    table = report.tables["rules_state"]
    assert table.rescued == len(states) - len(on_page) and table.uncounted_ranges == 1 and table.lost == 0


# --- several damaged ranges ------------------------------------------------------------------


def damage_leaves(
    path: Path,
    table: str,
    head: str,
    tail: str,
    keys_of: Callable[[bytes], list[Any]],
    interior_keys_of: Callable[[bytes], list[Any]] | None = None,
) -> tuple[set[Any], int, int]:
    """Overwrite leaves of ``table`` with random bytes. In key order, the first leaves follow
    ``head`` and the last ones ``tail`` ("x" damaged, "." sound); the leaves between are sound.
    Returns the keys no read can reach any more, the number of damaged ranges (runs of damaged
    leaves) and the number of leaves. The keys: those the damaged leaves held and, for a WITHOUT
    ROWID table (``interior_keys_of``: its interior pages hold keys too), those of its interior
    pages between two damaged leaves (a read reaches such a key only from a leaf next to it)."""
    with sqlite3.connect(path) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        pages = {
            r[0]: r[1] for r in conn.execute("SELECT pageno, pagetype FROM dbstat WHERE name = ?", (table,))
        }
    conn.close()
    with path.open("r+b") as f:
        held: dict[int, list[Any]] = {}
        interior: list[Any] = []
        for page, kind in pages.items():
            f.seek((page - 1) * page_size)
            if kind == "leaf":
                held[page] = keys_of(f.read(page_size))
            elif interior_keys_of is not None:
                interior.extend(interior_keys_of(f.read(page_size)))
        leaves = sorted(held, key=lambda page: min(held[page]))
        assert len(leaves) > len(head) + len(tail) + 10
        plan = head + "." * (len(leaves) - len(head) - len(tail)) + tail
        rng = random.Random(16)
        lost: set[Any] = set()
        for page, mark in zip(leaves, plan, strict=True):
            if mark == "x":
                f.seek((page - 1) * page_size)
                f.write(rng.randbytes(page_size))
                lost.update(held[page])
    firsts = [min(held[page]) for page in leaves]
    for key in interior:  # between the leaf before it and the one after it, in key order
        after = bisect.bisect(firsts, key)
        if plan[after - 1] == plan[after] == "x":
            lost.add(key)
    ranges = len([run for run in plan.split(".") if run])
    return lost, ranges, len(leaves)


# Damaged first leaf; two sound; 10 damaged, ONE sound, 39 damaged (the reviewer's case); four
# sound; single damaged leaves between single sound ones; the test adds the last leaves.
SEVERAL_HEAD = "x.." + "x" * 10 + "." + "x" * 39 + "...." + "x.x.x"


async def build_outbox(path: Path, rows: int) -> None:
    database = Database(path)
    try:
        outbox, committer = committed_outbox(database, max_pending=rows)
        for i in range(rows):
            outbox.put(reading(i))
            if i % 1_000 == 999:
                await committer.flush()
        await committer.flush()
    finally:
        database.close()


@pytest.mark.parametrize("tail", [".x", ".."], ids=["last leaf damaged", "last leaf sound"])
def test_several_damaged_ranges_lose_only_the_rows_their_pages_held(tmp_path: Path, tail: str) -> None:
    """Damage then a sound leaf then more damage, and a damaged first (and last) leaf: every row of
    every sound leaf comes back (a search that doubled its step jumped over the sound leaf)."""
    path = db.db_path(tmp_path / "data")
    asyncio.run(build_outbox(path, 3_000))
    with sqlite3.connect(path) as conn:
        before = {r[0] for r in conn.execute("SELECT seq FROM outbox")}
    conn.close()
    assert before == set(range(1, 3_001))  # dense: the seq gaps are exactly the lost rows
    on_damaged, ranges, leaves = damage_leaves(path, "outbox", SEVERAL_HEAD, tail, leaf_rowids)
    assert min(before) in on_damaged and ranges == 6 + tail.count("x")

    started = time.monotonic()
    database = Database(path)
    elapsed_s = time.monotonic() - started
    try:
        report = database.salvage
        salvaged = set(database.run_sync(lambda c: [r[0] for r in c.execute("SELECT seq FROM outbox")]))
    finally:
        database.close()
    missed = before - on_damaged - salvaged
    print(f"\n{len(before)} outbox rows on {leaves} leaves, {len(on_damaged)} on "
          f"{(SEVERAL_HEAD + tail).count('x')} damaged leaves in {ranges} ranges: {len(salvaged)} salvaged, "
          f"{len(missed)} readable ones not, {elapsed_s:.2f} s")  # fmt: skip
    assert salvaged <= before
    assert not missed, f"readable rows not salvaged: {sorted(missed)[:8]}"
    assert salvaged == before - on_damaged
    assert report is not None and report.complete
    outbox = report.tables["outbox"]
    assert (
        outbox.rescued == len(salvaged) and outbox.lost == len(on_damaged) and outbox.damaged_ranges == ranges
    )


@pytest.mark.parametrize(
    ("head", "tail"),
    [("x.." + "x" * 6 + "." + "x" * 10 + "..x.x", ".."), ("..." + "x" * 6 + "." + "x" * 10 + "..x.x", ".x")],
    ids=["first leaf damaged", "last leaf damaged"],
)
def test_a_without_rowid_table_with_several_damaged_ranges_loses_only_their_rows(
    tmp_path: Path, head: str, tail: str
) -> None:
    """rules_state (text keys): ranges of damaged leaves with one sound leaf between, and a damaged
    first or last leaf. (Both at once is not covered: no key is left to walk from; see the docs.)"""
    path = db.db_path(tmp_path / "data")
    database = Database(path)
    states = {f"{n:016x}": {"episodes": {"high": n, "pad": "s" * 60}} for n in range(3000)}
    database.run_sync(rules_state._write_now, (states, None))
    database.close()
    unreachable, ranges, _leaves = damage_leaves(
        path, "rules_state", head, tail, index_leaf_first_texts, index_interior_first_texts
    )
    assert ranges == 5 and (min(states) in unreachable) != (max(states) in unreachable)

    started = time.monotonic()
    database = Database(path)
    elapsed_s = time.monotonic() - started
    try:
        report = database.salvage
        salvaged = set(database.run_sync(lambda c: [r[0] for r in c.execute("SELECT key FROM rules_state")]))
    finally:
        database.close()
    print(f"\nrules_state: {len(states)} keys, {len(unreachable)} unreachable: {len(salvaged)} salvaged, "
          f"{len(states.keys() - salvaged - unreachable)} readable ones not, {elapsed_s:.2f} s")  # fmt: skip
    assert salvaged == states.keys() - unreachable
    assert report is not None and report.complete
    table = report.tables["rules_state"]
    assert table.rescued == len(salvaged) and table.uncounted_ranges == ranges and table.lost == 0


# --- kill -9 during the salvage -------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from gateway.db import salvage
from gateway.db.commit import Database
salvage.CHUNK_ROWS = 100  # more commits, so the kill lands between two of them
Database(Path(sys.argv[1])).close()
"""


def _outbox_progress(path: Path) -> int:
    """Outbox rows the running salvage has committed so far (0 when nothing is readable yet)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=0.1) as conn:
            row = conn.execute(
                f"SELECT rescued FROM {salvage.PROGRESS_TABLE} WHERE tbl = 'outbox'"
            ).fetchone()
        conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


KILL_WHEN: dict[str, Callable[[Path], bool]] = {
    "marker written": lambda path: pending_marker(path).exists(),
    "fresh file created": lambda path: bool(corrupt_copies(path)) and path.exists(),
    "outbox 40 % copied": lambda path: _outbox_progress(path) >= 0.4 * ROWS,
}


@pytest.mark.parametrize("moment", list(KILL_WHEN))
def test_kill_9_during_the_salvage_loses_nothing_readable(
    damaged: DamagedFile, tmp_path: Path, moment: str
) -> None:
    path = damaged.copy_to(tmp_path / "data")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        while not KILL_WHEN[moment](path):
            assert child.poll() is None, f"the salvage ended (exit {child.returncode}) before '{moment}'"
            assert time.monotonic() < deadline, f"'{moment}' never happened"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    copied_at_kill = _outbox_progress(path)
    if moment == "outbox 40 % copied":
        # The case that lost everything before: a fresh file that passes quick_check.
        assert copied_at_kill < ROWS - 1 - len(damaged.damaged_seqs)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        conn.close()
    assert pending_marker(path).exists()

    database = Database(path)  # the next start
    try:
        report = database.salvage
        first = corrupt_copies(path)
        assert report is not None and report.complete and database.quarantined == first[0]
    finally:
        database.close()
    assert len(first) == 1, "the fresh file was taken for a damaged one"
    assert_everything_readable_came_back(damaged, path)
    assert report.tables["outbox"].lost == len(damaged.damaged_seqs)
    assert report.tables["outbox"].rescued == ROWS - 1 - len(damaged.damaged_seqs)  # none twice
    assert not pending_marker(path).exists()
    print(f"\nkilled at '{moment}' ({copied_at_kill} outbox rows committed): next start "
          f"{report.tables['outbox'].rescued} rescued, {report.tables['outbox'].lost} lost")  # fmt: skip


def test_a_move_interrupted_halfway_is_finished_before_anything_opens_the_file(
    damaged: DamagedFile, tmp_path: Path
) -> None:
    """The state a crash leaves between renaming the -wal and the main file: the marker says "not
    moved yet", the -wal is already beside the damaged copy's name, the damaged file still in place."""
    path = damaged.copy_to(tmp_path / "data")
    moved = path.with_name(f"{path.name}.corrupt-20261201T000000Z")
    Path(f"{path}-wal").write_bytes(b"")  # an empty WAL: the move carries it along
    Path(f"{path}-wal").rename(f"{moved}-wal")
    pending_marker(path).write_text(json.dumps({"pending": [{"name": moved.name, "moved": False}]}))

    database = Database(path)
    try:
        assert database.quarantined == moved and database.salvage is not None and database.salvage.complete
    finally:
        database.close()
    assert corrupt_copies(path) == [moved]  # finished, not quarantined a second time
    assert_everything_readable_came_back(damaged, path)
    assert not pending_marker(path).exists()


def test_an_unreadable_marker_does_not_stop_the_agent_nor_the_salvage(
    damaged: DamagedFile, tmp_path: Path
) -> None:
    """The marker itself damaged (it is written atomically, so only by the medium): the agent starts
    and salvages every damaged copy whose salvage has not completed."""
    path = damaged.copy_to(tmp_path / "data")
    moved = path.with_name(f"{path.name}.corrupt-20261201T000000Z")
    path.rename(moved)
    pending_marker(path).write_bytes(b"\xff\x00garbage")

    database = Database(path)
    try:
        assert database.quarantined == moved and database.salvage is not None and database.salvage.complete
    finally:
        database.close()
    assert_everything_readable_came_back(damaged, path)
    assert not pending_marker(path).exists()


# --- the agent process: delivered, and reported in health and the final counters ---------------


def test_the_agent_delivers_every_salvaged_record_and_reports_rescued_and_lost(
    damaged: DamagedFile, tmp_path: Path, mosquitto: Any, subscribe: Any, free_udp_port: int
) -> None:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    config_file.write_text(
        config_file.read_text().replace(
            "tls: false}", "tls: false, health_interval_s: 0.5, drain_rate_records_s: 0}"
        )
    )
    damaged.copy_to(tmp_path / "data")
    expected_ids = {row[1] for row in damaged.readable("outbox").values()}
    sub = subscribe(f"edgegw/{GATEWAY_ID}/+")
    agent = AgentProcess(config_file)
    try:

        def delivered(msgs: list[Any]) -> set[str]:
            return {
                r["id"] for m in msgs if m.topic.endswith("/up") for r in json.loads(m.payload)["records"]
            }

        sub.wait_for(lambda msgs: expected_ids <= delivered(msgs), timeout_s=40)
        sub.wait_for(lambda msgs: any(m.topic.endswith("/health") for m in msgs), timeout_s=10)
    finally:
        assert agent.stop() == 0
    got = delivered(sub.messages)
    assert not {damaged.tables["outbox"][s][1] for s in damaged.damaged_seqs} & got
    health = sub.json_on(f"edgegw/{GATEWAY_ID}/health")[-1]
    final = agent.final_counters()
    for doc in (health["salvage"], final["salvage"]):
        assert doc["complete"] and doc["lost"] == len(damaged.damaged_seqs)
        assert doc["tables"]["outbox"]["rescued"] == len(expected_ids)
        assert doc["tables"]["devices"]["rescued"] == DEVICES + 1
    assert any("SALVAGE" in line and "ERROR" in line for line in agent.lines)
    print(f"\nagent delivered {len(got)} of {len(expected_ids)} readable records; health salvage "
          f"{ {k: health['salvage'][k] for k in ('rescued', 'lost')} }")  # fmt: skip
