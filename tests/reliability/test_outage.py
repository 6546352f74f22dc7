"""A broker outage of a simulated day, then back: nothing lost, bounded memory, the drain runs at
the configured rate, alerts go first and keep their latency during the drain.

Time is compressed: a day of a 500-device fleet reporting every 15 minutes (48,000 readings,
research/domain.md's typical LoRaWAN sensor period) is committed while the broker is down,
with alerts among them. Everything is real: SQLite file, group commit, paho, mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway import db
from gateway.config import MqttSection
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from gateway.uplink.forwarder import Forwarder, ForwarderSettings
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics
from tests.conftest import Broker

pytestmark = pytest.mark.timeout(60)
TOPICS = Topics("edgegw", "gw-outage")
DEVICES = 500
READINGS = DEVICES * 96  # one day at one reading per 15 minutes
# Well below what a loaded 2-core machine drains unthrottled (~20k records/s), so the test
# measures the limiter, not the machine's speed.
DRAIN_RATE = 8_000.0


def reading(i: int) -> Record:
    dev = f"70b3d57ed{i % DEVICES:07x}"
    body: dict[str, Any] = {
        "id": f"{dev}-a1b2c3d4-{i // DEVICES}",
        "kind": "reading",
        "dev_eui": dev,
        "profile": "milesight/em310-udl",
        "received_at": "2024-05-01T12:00:00.000Z",
        "time_quality": "ntp",
        "fcnt": i // DEVICES,
        "fport": 85,
        "rx": {"rssi_dbm": -97.0, "snr_db": 7.5, "freq_hz": 868100000, "sf": 7, "bw_hz": 125000,
               "backend": "semtech-udp", "gateway_eui": "b827ebfffe000001"},
        "data": {"battery": 90, "distance": 1000 + i % 3000, "position": "normal"},
        "raw": "01755a03820c0404000000",
    }  # fmt: skip
    return Record(record_id=body["id"], kind="reading", priority=Priority.READING, body=body)


def alert(i: int) -> Record:
    body: dict[str, Any] = {
        "id": f"alert-{i}",
        "kind": "alert",
        "dev_eui": "70b3d57ed0000001",
        "data": {"n": i},
    }
    return Record(record_id=body["id"], kind="alert", priority=Priority.ALERT, body=body)


class Arrivals:
    """Subscriber recording (arrival time, kind, ids) per message, in arrival order."""

    def __init__(self, broker: Broker) -> None:
        self.log: list[tuple[float, str, list[str]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="outage-sub")
        done = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(f"{TOPICS.root}/#", qos=1)
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert done.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        ids = [r["id"] for r in doc["records"]] if "records" in doc else [doc["record"]["id"]]
        with self._lock:
            self.log.append((time.monotonic(), msg.topic.rsplit("/", 1)[-1], ids))

    def ids(self) -> set[str]:
        with self._lock:
            return {i for _t, _k, ids in self.log for i in ids}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_a_day_offline_then_back(tmp_path: Path, mosquitto: Broker) -> None:
    mosquitto.stop()  # the outage starts before the agent does
    database = Database(db.db_path(tmp_path))
    outbox = Outbox(database)
    committer = GroupCommitter(database, [outbox], interval_s=0.05, max_pending=2000)
    outbox.committer_notify = committer.notify
    settings = MqttSection(
        host=mosquitto.host, port=mosquitto.port, tls=False, reconnect_min_s=1.0, reconnect_max_s=1.0
    )
    uplink = MqttUplink(settings, client_id="gw-outage", will=None)
    forwarder = Forwarder(
        outbox, uplink, TOPICS, "gw-outage",
        ForwarderSettings(
            batch_max_records=500, batch_linger_ms=20, max_inflight_batches=4, drain_rate_records_s=DRAIN_RATE
        ),
    )  # fmt: skip
    await uplink.start()
    tasks = [asyncio.create_task(committer.run()), asyncio.create_task(forwarder.run())]
    sub: Arrivals | None = None
    try:
        # The day: readings with an alert every 4,800 (ten alerts), committed while offline.
        alerts = [alert(i) for i in range(10)]
        for i in range(READINGS):
            outbox.put(reading(i))
            if i % 4800 == 4799:
                outbox.put(alerts[i // 4800])
            if i % 2000 == 1999:
                await committer.flush()
        await committer.flush()
        assert outbox.depth == READINGS + len(alerts)
        assert uplink.counters["connect_failures"] >= 1

        tracemalloc.start()
        max_leased = 0
        mosquitto.start()
        sub = Arrivals(mosquitto)  # before the uplink's next attempt (reconnect delay >= 0.5 s)
        live_alert_put_at = 0.0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and outbox.depth > 0:
            max_leased = max(max_leased, outbox.leased_count)
            if not live_alert_put_at and len(sub.ids()) > READINGS // 2:
                outbox.put(alert(99))  # a live alert in the middle of the drain
                live_alert_put_at = time.monotonic()
            await asyncio.sleep(0.005)
        _current, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await asyncio.sleep(0.3)

        expected = {r.record_id for r in map(reading, range(READINGS))} | {a.record_id for a in alerts}
        got = sub.ids()
        assert expected | {"alert-99"} <= got, f"{len(expected - got)} records lost"
        assert outbox.depth == 0

        log = list(sub.log)
        bulk = [(t, ids) for t, kind, ids in log if kind == "up"]
        # Alerts first: all ten are out before a tenth of the backlog.
        alert_times = [t for t, kind, ids in log if kind == "alert" and ids[0] != "alert-99"]
        tenth = bulk[
            [sum(len(ids) for _t, ids in bulk[: k + 1]) >= READINGS // 10 for k in range(len(bulk))].index(
                True
            )
        ][0]
        assert len(alert_times) == 10 and max(alert_times) <= tenth
        # Drain at the configured rate (the bucket allows one batch of burst).
        span_s = bulk[-1][0] - bulk[0][0]
        rate = (READINGS - len(bulk[0][1])) / span_s
        assert 0.6 * DRAIN_RATE <= rate <= 1.15 * DRAIN_RATE, f"drained at {rate:.0f} records/s"
        # The live alert kept its latency while the backlog drained.
        live_at = next(t for t, kind, ids in log if ids == ["alert-99"])
        assert live_at - live_alert_put_at < 0.25
        # Bounded memory: leases never exceed the in-flight window; the drain's Python heap stays small.
        assert max_leased <= 4 * 500
        assert peak_bytes < 40 * 1024 * 1024, f"peak traced memory {peak_bytes / 1e6:.1f} MB"
    finally:
        if sub is not None:
            sub.close()
        await forwarder.drain(2.0)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5.0)
        await uplink.stop()
        database.close()
