"""Files written by earlier agents, and files read by earlier agents.

A file at schema version 1 gets the compatible additions (``rules_state``) in one open, keeping
its rows, whether or not the agent that wrote it had created the table itself (agents before the
additions created it when their rules started). And the other way: a file this agent opened keeps
``user_version`` 1, so that an agent update that fails its health check rolls back to the
previous release on the same file (that release refuses any higher version: gateway.db.migrate).
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from gateway import db
from gateway.provisioning import registry

# The statement agents of schema version 1 ran when their rules started.
V1_LAZY_RULES_STATE = (
    "CREATE TABLE IF NOT EXISTS rules_state (key TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID"
)


def v1_file(path: Path, *, with_rules_state: bool) -> None:
    """A database as an agent of schema version 1 left it: one device, maybe some rule state."""
    schema = resources.files("gateway.db").joinpath("schema_v1.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO devices (dev_eui, profile, activation, created_at)"
        " VALUES ('70b3d57ed0000001', 'test/dev', 'abp', '2025-11-24T00:00:00Z')"
    )
    if with_rules_state:
        conn.execute(V1_LAZY_RULES_STATE)
        conn.executemany(
            "INSERT INTO rules_state (key, state) VALUES (?, ?)",
            [("70b3d57ed0000001", '{"episodes":{"hot":"raised"}}'), ("", '{"tick":7}')],
        )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("with_rules_state", [False, True], ids=["without-rules_state", "with-rules_state"])
def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path, with_rules_state: bool) -> None:
    path = db.db_path(tmp_path)
    v1_file(path, with_rules_state=with_rules_state)

    conn = db.connect(path)
    # Still version 1: the previous release (which refuses anything higher) opens it after a rollback.
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 1
    assert sorted(conn.execute("SELECT name FROM schema_additions")) == [
        ("adr",),
        ("device_class",),
        ("device_state",),
        ("home",),
        ("mac_version",),
        ("multicast",),
        ("multicast_retired",),
        ("registry_push",),
        ("rules_state",),
    ]
    assert conn.execute("SELECT dev_eui FROM devices").fetchall() == [("70b3d57ed0000001",)]
    expected = [("", '{"tick":7}'), ("70b3d57ed0000001", '{"episodes":{"hot":"raised"}}')]
    assert conn.execute("SELECT key, state FROM rules_state ORDER BY key").fetchall() == (
        expected if with_rules_state else []
    )
    # The table takes what gateway.rules_state writes: an upsert on the key.
    conn.execute(
        "INSERT INTO rules_state (key, state) VALUES ('', '{}')"
        " ON CONFLICT (key) DO UPDATE SET state = excluded.state"
    )
    assert conn.execute("SELECT state FROM rules_state WHERE key = ''").fetchone() == ("{}",)
    conn.close()
    db.connect(path).close()  # opened again: nothing left to migrate


def test_a_version_1_device_reads_as_class_a_and_an_earlier_agents_insert_still_works(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)
    v1_file(path, with_rules_state=False)
    conn = db.connect(path)
    # What a schema-1 agent (rolled back) writes: it names its columns and knows no class.
    conn.execute(
        "INSERT INTO devices (dev_eui, profile, activation, created_at)"
        " VALUES ('70b3d57ed0000002', 'test/dev', 'abp', '2025-11-24T00:00:00Z')"
    )
    assert [d.lorawan_class for d in registry.list_devices(conn)] == ["A", "A"]
    conn.execute("UPDATE devices SET lorawan_class = 'C' WHERE dev_eui = '70b3d57ed0000002'")
    assert [d.lorawan_class for d in registry.list_devices(conn)] == ["A", "C"]
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE devices SET lorawan_class = 'B'")
    conn.close()


def test_a_new_file_has_the_rules_state_table_without_rowid(tmp_path: Path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'rules_state'").fetchone()
    assert "WITHOUT ROWID" in sql.upper()
    conn.close()


def test_a_file_with_additions_opens_in_an_agent_that_knows_none_and_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = db.db_path(tmp_path)
    conn = db.connect(path)
    conn.execute("INSERT INTO rules_state (key, state) VALUES ('', '{\"tick\":1}')")
    # An addition of a newer agent this one does not know: recorded, its table left alone.
    conn.execute("CREATE TABLE later_thing (x)")
    conn.execute("INSERT INTO schema_additions VALUES ('later_thing', '2027-01-01T00:00:00Z')")
    conn.close()

    monkeypatch.setattr(db, "ADDITIONS", ())  # the previous release: no additions known
    conn = db.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT state FROM rules_state").fetchall() == [('{"tick":1}',)]
    conn.close()

    monkeypatch.setattr(db, "ADDITIONS", ("rules_state",))  # this release again: nothing to redo
    conn = db.connect(path)
    assert sorted(conn.execute("SELECT name FROM schema_additions")) == [
        ("adr",),
        ("device_class",),
        ("device_state",),
        ("home",),
        ("later_thing",),
        ("mac_version",),
        ("multicast",),
        ("multicast_retired",),
        ("registry_push",),
        ("rules_state",),
    ]
    assert conn.execute("SELECT state FROM rules_state").fetchall() == [('{"tick":1}',)]
    conn.close()
