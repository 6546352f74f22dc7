"""Issue 16, finding 7 review: quarantined records can be looked at and sent again.

A real mosquitto speaking MQTT 5 with ``message_size_limit`` (it refuses a larger PUBLISH with a
PUBACK of reason 0x95), the agent as a process, records bigger than that limit committed into its
outbox with the real ``Outbox`` while it is stopped: the agent quarantines them (the others flow).
The broker is then restarted without the limit (the cause was temporary: a misconfigured or
failover broker), the technician lists the quarantine with ``edgegw buffer quarantine`` and runs
``edgegw buffer quarantine --requeue``: every record reaches the subscriber, and the readings go out
together in one message, i.e. the batch limit the forwarder learned from the refusals was forgotten
at the reconnect.

Before this change: ``edgegw buffer quarantine`` did not exist (exit 2), nothing could move a
record back, and the learned limit held for the agent's life (the requeued readings went one per
message). Without an agent, ``--requeue`` works in the file under the instance lock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway import db, instance_lock
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from tests.conftest import free_port
from tests.e2e.harness import GATEWAY_ID, AgentProcess, cli
from tests.faults.test_broker_limits import LimitedBroker, db_rows, reading_body, write_config
from tests.faults.test_broker_limits import limited_broker as limited_broker  # the fixture
from tests.reliability.conftest import DurableSubscriber

BROKER_LIMIT_BYTES = 20_000
BIG_PAD_BYTES = 25_000
"""Bigger than the limited broker takes; three of them fit one message of the default limit (128 KiB)."""
NORMAL = 100
BIG_READINGS = ["big-reading-1", "big-reading-2", "big-reading-3"]
BIG_ALERT = "big-alert"


class BatchSubscriber(DurableSubscriber):
    """Also keeps the record ids of each message, to see how records were batched."""

    def __init__(self, broker: LimitedBroker, client_id: str) -> None:
        self.per_message: list[list[str]] = []
        super().__init__(broker, f"edgegw/{GATEWAY_ID}/#", client_id=client_id)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        super()._on_message(_c, _u, msg)
        doc = json.loads(msg.payload)
        if "records" in doc:  # an `up` batch (alerts, health and state are one per message)
            with self._lock:
                self.per_message.append([r["id"] for r in doc["records"]])


def put_records(data_dir: Path, *, quarantine: bool = False) -> set[str]:
    """Commit ``NORMAL`` readings, then the big readings and the big alert, with the real outbox code.

    With ``quarantine``, the big ones are also set aside as the forwarder does (lease, quarantine,
    group commit) and the normal ones acked: a data directory whose agent met a limited broker.
    Returns the normal ids."""

    async def main() -> set[str]:
        database = Database(db.db_path(data_dir))
        outbox = Outbox(database)
        committer = GroupCommitter(database, [outbox], interval_s=0.01, max_pending=500)
        outbox.committer_notify = committer.notify
        normal = set()
        for i in range(NORMAL):
            body = reading_body(i, 250)
            outbox.put(Record(record_id=body["id"], kind="reading", priority=Priority.READING, body=body))
            normal.add(body["id"])
        for name in BIG_READINGS:
            body = {**reading_body(0, BIG_PAD_BYTES), "id": name}
            outbox.put(Record(record_id=name, kind="reading", priority=Priority.READING, body=body))
        alert = {**reading_body(0, BIG_PAD_BYTES), "id": BIG_ALERT, "kind": "alert"}
        outbox.put(Record(record_id=BIG_ALERT, kind="alert", priority=Priority.ALERT, body=alert))
        await committer.flush()
        if quarantine:
            leased = await outbox.lease(1000)
            outbox.quarantine([row.seq for row in leased if row.record_id not in normal], "too_large")
            await outbox.ack([row.seq for row in leased if row.record_id in normal])
            await committer.flush()
        database.close()
        return normal

    return asyncio.run(main())


def cli_json(config_file: Path, *args: str) -> dict[str, Any]:
    done = cli(config_file, *args, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def poll(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout_s} s")


def test_records_quarantined_by_a_limited_broker_are_delivered_after_requeue(
    tmp_path: Path, limited_broker: Callable[..., LimitedBroker]
) -> None:
    broker = limited_broker(f"message_size_limit {BROKER_LIMIT_BYTES}")
    config_file = write_config(tmp_path, free_port(2), broker.port, ", protocol: mqttv5")
    data_dir = tmp_path / "data"
    normal = put_records(data_dir)
    big = {*BIG_READINGS, BIG_ALERT}
    first = BatchSubscriber(broker, "quarantine-sub-1")
    agent = AgentProcess(config_file)
    second: BatchSubscriber | None = None
    try:
        # 1. The limited broker: the normal records flow, the big ones are quarantined.
        first.wait_ids(normal, timeout_s=30.0)
        poll(
            "4 records quarantined",
            lambda: cli_json(config_file, "buffer", "quarantine")["quarantined"] == 4,
            timeout_s=20.0,
        )
        listed = cli_json(config_file, "buffer", "quarantine")
        assert {(r["id"], r["reason"]) for r in listed["records"]} == {(name, "too_large") for name in big}
        assert listed["by_reason"] == {"too_large": 4}
        assert all(r["size"] > BROKER_LIMIT_BYTES for r in listed["records"])
        text = cli(config_file, "buffer", "quarantine")
        assert text.returncode == 0 and BIG_ALERT in text.stdout and "--requeue" in text.stdout
        assert not big & set(first.snapshot())

        # 2. The broker comes back without the limit; the agent reconnects.
        broker.stop()
        broker.extra_lines = ()
        broker.start()
        poll(
            "agent reconnected",
            lambda: cli_json(config_file, "status")["uplink"]["counters"].get("connects", 0) >= 2,
            timeout_s=20.0,
        )
        second = BatchSubscriber(broker, "quarantine-sub-2")

        # 3. The technician requeues: every record is delivered, and the readings go in one batch.
        answer = cli_json(config_file, "buffer", "quarantine", "--requeue")
        assert answer == {"done": True, "requeued": 4, "quarantined": 0, "connected": True, "by": "agent"}
        second.wait_ids(big, timeout_s=20.0)
        with second._lock:
            batches = [set(ids) & set(BIG_READINGS) for ids in second.per_message]
        assert max(len(b) for b in batches) == len(BIG_READINGS), (
            f"the requeued readings went in {sum(1 for b in batches if b)} messages: the batch limit "
            "learned from the old broker's refusals was kept after the reconnect"
        )
        assert cli_json(config_file, "buffer", "quarantine")["quarantined"] == 0
    finally:
        code = agent.stop()
        first.close()
        if second is not None:
            second.close()
    assert code == 0, "\n".join(agent.lines[-20:])
    counters = agent.final_counters()
    assert counters["outbox"]["quarantined"] == 4 and counters["outbox"]["requeued"] == 4
    assert counters["storage"]["quarantined"] == 0
    assert db_rows(data_dir, "SELECT count(*) FROM outbox") == [(0,)]
    assert db_rows(data_dir, "SELECT count(*) FROM outbox_quarantine") == [(0,)]


def test_requeue_without_an_agent_works_in_the_file_under_the_instance_lock(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, free_port(2), free_port(), "")
    data_dir = tmp_path / "data"
    put_records(data_dir, quarantine=True)
    big = {*BIG_READINGS, BIG_ALERT}

    # An agent that holds the data directory but does not answer (starting, stuck): hands off.
    lock = instance_lock.acquire(data_dir)
    try:
        refused = cli(config_file, "buffer", "quarantine", "--requeue")
    finally:
        lock.release()
    assert refused.returncode == 1, refused.stderr
    assert "agent is not running" in refused.stderr and "another edgegw agent" in refused.stderr
    assert len(db_rows(data_dir, "SELECT * FROM outbox_quarantine")) == 4

    answer = cli_json(config_file, "buffer", "quarantine", "--requeue")
    assert answer == {"done": True, "requeued": 4, "quarantined": 0, "connected": None, "by": "file"}
    assert {r[0] for r in db_rows(data_dir, "SELECT record_id FROM outbox")} == big
    assert db_rows(data_dir, "SELECT count(*) FROM outbox_quarantine") == [(0,)]
    assert "no quarantined records" in cli(config_file, "buffer", "quarantine").stdout

    misuse = cli(config_file, "buffer", "--requeue")
    assert misuse.returncode == 2 and "--requeue goes with 'buffer quarantine'" in misuse.stderr
