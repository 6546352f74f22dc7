"""Helpers of the reliability tests: a mosquitto that keeps its sessions across restarts,
a durable MQTT subscriber, and the agent as a process that can be killed with SIGKILL.

Everything talks to 127.0.0.1 only; every wait is bounded in time.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Broker, free_port


@dataclass
class PersistentBroker(Broker):
    """mosquitto with persistence on: a SIGTERM restart keeps the subscriber's session and queue."""

    persistent: bool = True

    def stop_saving(self) -> None:
        """A clean stop (SIGTERM), which saves the sessions; fails if nothing was saved."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        saved = self.workdir / "mosquitto.db"
        assert saved.exists(), f"mosquitto saved no sessions in {self.workdir}: the test premise is broken"

    def restart(self) -> None:
        self.stop_saving()
        self.start()


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[PersistentBroker]:
    workdir = tmp_path / "mosquitto-p"
    workdir.mkdir()
    broker = PersistentBroker(port=free_port(), workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class DurableSubscriber:
    """A QoS 1 subscriber with a persistent session (clean_session false) that reconnects by itself."""

    def __init__(self, broker: Broker, topic_filter: str, client_id: str = "reliability-sub") -> None:
        self.ids: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(5):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            if "records" in doc:
                self.ids.extend(r["id"] for r in doc["records"])
                self.records.extend(doc["records"])
            elif "record" in doc:
                self.ids.append(doc["record"]["id"])
                self.records.append(doc["record"])
            self.topics.append(msg.topic)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.ids)

    def wait_ids(self, expected: set[str], timeout_s: float) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = set(self.snapshot())
            if expected <= got:
                return got
            time.sleep(0.05)
        missing = expected - set(self.snapshot())
        pytest.fail(f"{len(missing)} committed records never reached the broker, e.g. {sorted(missing)[:5]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def restartable_agent_config(
    tmp_path: Path, gateway_id: str, broker_port: int, *, data_dir: Path | None = None
) -> tuple[Path, int, Path]:
    """(config file, UDP port, data dir) of an agent that reconnects within 0.5 s and commits and
    forwards in small, quick groups: what the kill -9 and chaos tests restart again and again.
    ``data_dir`` defaults to ``tmp_path / "data"`` (the chaos test puts it on a small tmpfs)."""
    udp_port = free_port(2)  # SOCK_DGRAM
    config_file, data_dir = tmp_path / "edgegw.yaml", data_dir or tmp_path / "data"
    config_file.write_text(
        f"gateway: {{id: {gateway_id}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, tls: false, reconnect_min_s: 0.1, "
        "reconnect_max_s: 0.5}\n"
        "outbox: {commit_interval_ms: 20, batch_max_records: 50, batch_linger_ms: 20}\n"
        "log: {stats_interval_s: 0}\n"
        f"data_dir: {data_dir}\n"
    )
    return config_file, udp_port, data_dir


COMMIT_LOG = """
CREATE TABLE IF NOT EXISTS test_committed (record_id TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS test_log_commit AFTER INSERT ON outbox
BEGIN INSERT INTO test_committed (record_id) VALUES (NEW.record_id); END;
"""


def install_commit_log(db_file: Path) -> None:
    """A trigger that logs every id inserted into the outbox, in the inserting transaction:
    an id is in ``test_committed`` exactly when its record was committed (no hook in the agent)."""
    with sqlite3.connect(db_file) as conn:
        conn.executescript(COMMIT_LOG)


def committed_ids(db_file: Path) -> list[str]:
    conn = sqlite3.connect(db_file)
    try:
        return [r[0] for r in conn.execute("SELECT record_id FROM test_committed")]
    finally:
        conn.close()


def integrity(db_file: Path) -> str:
    conn = sqlite3.connect(db_file)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
