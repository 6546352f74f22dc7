"""The rule engine's state in the database (gateway/rules_state.py), committed by the real group
committer in the transaction of the records it produced, restored by a new engine as after a
kill -9: an open episode stays open (no second "raised"), a pending debounce keeps its count.
A real SQLite file in tmp_path; the JSON file older agents wrote is moved in once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.rules import RuleEngine
from gateway.rules_state import RulesStateStore

from .helpers import DEV, DEV2, T0, edges, engine, reading, ruleset

RULES = """
    schema_version: 1
    rules:
      - id: hot
        devices: {profiles: [test/dev]}
        when: {threshold: {value: t, above: 50, clear_below: 40}}
        for_readings: 2
        severity: warning
"""


def restarted(path: Path, rules_text: str = RULES) -> tuple[RuleEngine, RulesStateStore, Database]:
    """A new engine on the same file, as the agent builds it at start."""
    database = Database(path)
    eng = engine(rules_text)
    store = RulesStateStore()
    store.attach(database, eng)
    return eng, store, database


async def commit(database: Database, store: RulesStateStore) -> None:
    committer = GroupCommitter(database, [store], interval_s=0.01, max_pending=10)
    await committer.flush()


async def test_an_open_episode_survives_a_restart_and_is_not_raised_again(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)
    eng, store, database = restarted(path)
    out = eng.evaluate(reading(T0, t=60)) + eng.evaluate(reading(T0 + 60, t=61))
    out += eng.evaluate(reading(T0, dev=DEV2, t=70))  # DEV2: one reading of two, pending
    assert edges(out) == ["raised"]
    await commit(database, store)
    database.close()  # nothing else is saved: what follows is what a kill -9 leaves

    eng2, store2, database2 = restarted(path)
    assert store2.restored_devices == 2
    assert edges(eng2.evaluate(reading(T0 + 120, t=62))) == []  # still open: no second raise
    assert edges(eng2.evaluate(reading(T0 + 60, dev=DEV2, t=71))) == ["raised"]  # the count went on
    assert edges(eng2.evaluate(reading(T0 + 180, t=30))) == ["cleared"]
    database2.close()


async def test_uncommitted_changes_are_not_restored(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)
    eng, _store, database = restarted(path)
    assert edges(eng.evaluate(reading(T0, t=60)) + eng.evaluate(reading(T0 + 60, t=61))) == ["raised"]
    database.close()  # killed before the group commit: the alert record was not committed either

    eng2, _store2, database2 = restarted(path)
    out = eng2.evaluate(reading(T0 + 120, t=62)) + eng2.evaluate(reading(T0 + 180, t=63))
    assert edges(out) == ["raised"]  # raised again, as it must: its record was lost with it
    database2.close()


async def test_a_reload_rewrites_the_state_of_removed_rules(tmp_path: Path) -> None:
    path = db.db_path(tmp_path)
    eng, store, database = restarted(path)
    eng.evaluate(reading(T0, t=60))
    await commit(database, store)
    eng.swap(ruleset("schema_version: 1\n"), T0 + 1)  # no rules any more: the episode goes
    await commit(database, store)
    database.close()
    conn = sqlite3.connect(path)
    try:
        rows = {k: json.loads(v) for k, v in conn.execute("SELECT key, state FROM rules_state")}
    finally:
        conn.close()
    assert rows[DEV]["episodes"] == [] and rows[DEV]["device"] == ["test/dev", ""]


async def test_the_json_file_of_older_agents_is_moved_into_the_database(tmp_path: Path) -> None:
    old = engine(RULES)
    old.evaluate(reading(T0, t=60))
    old.evaluate(reading(T0 + 60, t=61))
    legacy = tmp_path / "rules-state.json"
    legacy.write_text(json.dumps(old.snapshot()))
    path = db.db_path(tmp_path)

    database = Database(path)
    eng = engine(RULES)
    RulesStateStore().attach(database, eng, legacy_file=legacy)
    database.close()
    assert not legacy.exists()
    eng2, _store, database2 = restarted(path)
    assert edges(eng2.evaluate(reading(T0 + 120, t=62))) == []  # open, from the file, via the table
    database2.close()
