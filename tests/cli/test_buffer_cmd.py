"""``edgegw buffer`` reads the outbox figures from the database file (ARCHITECTURE.md §3.1:
``--json`` prints exactly one JSON document; exit 0, or 2 with a reason on stderr)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway import db
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox


def _fill(data_dir: Path) -> None:
    async def main() -> None:
        database = Database(db.db_path(data_dir))
        outbox = Outbox(database, max_bytes=2000)
        committer = GroupCommitter(database, [outbox], interval_s=0.01, max_pending=100)
        outbox.committer_notify = committer.notify
        for i in range(30):
            kind: Any = "alert" if i < 2 else "reading"
            body = {"id": f"r{i}", "kind": kind, "data": {"v": i}}
            prio = Priority.ALERT if i < 2 else Priority.READING
            outbox.put(Record(record_id=body["id"], kind=kind, priority=prio, body=body))
        await committer.flush()
        database.close()

    asyncio.run(main())


def run(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_buffer_json_and_text(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _fill(data_dir)
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw-buf}}\ndata_dir: {data_dir}\n")

    result = run(config_file, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["max_bytes"] == 2000 and doc["bytes"] <= 2000
    assert doc["depth_by_class"]["alert"] == 2
    assert doc["depth"] == sum(doc["depth_by_class"].values()) < 30
    assert doc["evicted"]["evicted.reading"] == 30 - doc["depth"]
    assert doc["oldest_age_s"] is not None and doc["oldest_age_s"] < 60

    text = run(config_file)
    assert text.returncode == 0
    assert "records waiting" in text.stdout and "evicted.reading" in text.stdout


def test_buffer_without_a_database_is_exit_2(tmp_path: Path) -> None:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw-buf}}\ndata_dir: {tmp_path / 'none'}\n")
    result = run(config_file, "--json")
    assert result.returncode == 2 and "no database" in result.stderr


def test_buffer_flush_without_a_running_agent_fails_with_a_reason(tmp_path: Path) -> None:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw-buf}}\ndata_dir: {tmp_path / 'data'}\n")

    result = run(config_file, "flush")

    assert result.returncode == 1
    assert "not running" in result.stderr and "buffer flush needs the running agent" in result.stderr
    assert result.stdout == ""


def test_wait_without_flush_is_a_usage_error(tmp_path: Path) -> None:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw-buf}}\ndata_dir: {tmp_path / 'data'}\n")

    result = run(config_file, "--wait", "1")

    assert result.returncode == 2
    assert "--wait goes with 'buffer flush'" in result.stderr
