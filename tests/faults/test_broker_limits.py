"""Issue 16, finding 7: a broker whose message size limit is below the batch size.

A real mosquitto with ``message_size_limit`` (payload bound: over it, mosquitto drops the message,
acknowledging it all the same with MQTT 3.1.1, and with a PUBACK of reason 0x95 with MQTT 5) or
``max_packet_size`` (the whole packet; announced in an MQTT 5 CONNACK as Maximum Packet Size), the
agent as a process, a backlog of 1,000 committed records put into its outbox through the real
``Outbox`` while it is stopped, 30 live readings through the fake packet forwarder. Each test
asserts that every record reaches a subscriber (duplicates allowed) and, with MQTT 5, that a record
bigger than the broker takes is quarantined and never holds up the others.

Before the fix (the reviewer's figures): 3.1.1 lost 1,000 of 1,000 silently; MQTT 5 sent the same
refused batch after every reconnect and the whole outbox stalled (the live readings never arrived).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import config as config_mod
from gateway import db
from gateway.config import MqttSection
from gateway.db.commit import Database, GroupCommitter
from gateway.errors import ConfigError, MessageTooLarge
from gateway.messages import Priority, Record
from gateway.outbox import Outbox
from gateway.uplink import envelope
from gateway.uplink.mqtt import MqttUplink
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker, free_port
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    em310,
    make_device,
    register_abp,
    wait_ready,
)
from tests.reliability.conftest import DurableSubscriber

BACKLOG = 1000
LIVE = 30
BROKER_LIMIT_BYTES = 20_000
OVERSIZED_BYTES = 25_000
"""A record body bigger than any message the limited broker takes: it can never be sent."""


@dataclass
class LimitedBroker(Broker):
    """mosquitto with extra configuration lines (its message size limits)."""

    extra_lines: tuple[str, ...] = ()

    def config_text(self) -> str:
        # A bound instead of the wrapper's "max_queued_messages 0": mosquitto 2.0.11 compares it with
        # the client's queued packets after refusing a too-large PUBLISH (handle_publish.c), and with
        # 0 it then drops the publisher's connection too, which a broker configured so would do.
        lines = ("max_queued_messages 100000", *self.extra_lines)
        return super().config_text() + "".join(f"{line}\n" for line in lines)


@pytest.fixture
def limited_broker(tmp_path: Path) -> Iterator[Callable[..., LimitedBroker]]:
    started: list[LimitedBroker] = []

    def start(*lines: str) -> LimitedBroker:
        workdir = tmp_path / "mosquitto-limited"
        workdir.mkdir()
        broker = LimitedBroker(port=free_port(), workdir=workdir, extra_lines=lines)
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def reading_body(i: int, pad_bytes: int) -> dict[str, Any]:
    return {
        "id": f"backlog-{i:05d}", "kind": "reading", "dev_eui": "70b3d57ed00000ff", "profile": "acme/noise-1",
        "received_at": "2026-11-25T18:03:58.989Z", "time_quality": "ntp", "fcnt": i, "fport": 2,
        "data": {"laeq_db": 61.2, "note": "x" * pad_bytes}, "raw": "0a1b2c",
    }  # fmt: skip


def put_backlog(data_dir: Path, *, pad_bytes: int, oversized: bool) -> set[str]:
    """Commit ``BACKLOG`` readings (plus, with ``oversized``, one reading and one alert bigger than the
    broker takes) into the agent's outbox with the real outbox code; returns the deliverable ids."""

    async def main() -> set[str]:
        database = Database(db.db_path(data_dir))
        outbox = Outbox(database)
        committer = GroupCommitter(database, [outbox], interval_s=0.01, max_pending=500)
        outbox.committer_notify = committer.notify
        ids = set()
        for i in range(BACKLOG):
            body = reading_body(i, pad_bytes)
            outbox.put(Record(record_id=body["id"], kind="reading", priority=Priority.READING, body=body))
            ids.add(body["id"])
            if oversized and i == BACKLOG // 2:
                big = {**reading_body(i, OVERSIZED_BYTES), "id": "oversized-reading"}
                outbox.put(Record(record_id=big["id"], kind="reading", priority=Priority.READING, body=big))
                alert = {**reading_body(i, OVERSIZED_BYTES), "id": "oversized-alert", "kind": "alert"}
                outbox.put(Record(record_id=alert["id"], kind="alert", priority=Priority.ALERT, body=alert))
        await committer.flush()
        database.close()
        return ids

    return asyncio.run(main())


def write_config(tmp_path: Path, udp_port: int, broker_port: int, mqtt_extra: str) -> Path:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, tls: false, reconnect_min_s: 0.1, "
        f"reconnect_max_s: 0.5, drain_rate_records_s: 0{mqtt_extra}}}\n"
        "log: {stats_interval_s: 0}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    return config_file


def send_live(fwd: PacketForwarder, device: AbpDevice) -> set[tuple[str, int]]:
    """``LIVE`` readings of one device, a few per datagram, while the backlog drains."""
    sent = set()
    for _ in range(LIVE // 3):
        frames = []
        for _ in range(3):
            sent.add((device.dev_eui.hex(), device.fcnt_up))
            frames.append((device.uplink(em310(90, 1500, False), 85), {}))
        token = fwd.send_frames(frames)
        assert fwd.wait_ack(token, 2.0), "no PUSH_ACK"
        time.sleep(0.05)
    return sent


def wait_all(sub: DurableSubscriber, backlog: set[str], live: set[tuple[str, int]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sub._lock:
            got = set(sub.ids)
            live_got = {(r.get("dev_eui"), r.get("fcnt")) for r in sub.records if r["id"] not in backlog}
        if backlog <= got and live <= live_got:
            return
        time.sleep(0.1)
    pytest.fail(
        f"{len(backlog - got)} of {len(backlog)} backlog records and {len(live - live_got)} of {len(live)} "
        f"live readings never reached the subscriber"
    )


def db_rows(data_dir: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(db.db_path(data_dir))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def run_case(
    tmp_path: Path, broker: LimitedBroker, mqtt_extra: str, *, pad_bytes: int, oversized: bool, live: bool
) -> dict[str, Any]:
    """Backlog in the outbox, agent started, with ``live`` readings sent meanwhile; every record must
    arrive. Returns the agent's final counters."""
    udp_port = free_port(2)
    config_file = write_config(tmp_path, udp_port, broker.port, mqtt_extra)
    device = make_device(1)
    if live:
        register_abp(config_file, device)
    backlog = put_backlog(tmp_path / "data", pad_bytes=pad_bytes, oversized=oversized)
    sub = DurableSubscriber(broker, f"edgegw/{GATEWAY_ID}/#", client_id="limits-sub")
    agent = AgentProcess(config_file)
    try:
        sent: set[tuple[str, int]] = set()
        if live:
            with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
                wait_ready(fwd)
                sent = send_live(fwd, device)
        wait_all(sub, backlog, sent, timeout_s=40.0)
    finally:
        code = agent.stop()
        sub.close()
    assert code == 0, "\n".join(agent.lines[-20:])
    counters = agent.final_counters()
    assert db_rows(tmp_path / "data", "SELECT count(*) FROM outbox") == [(0,)], "records left undelivered"
    return counters


def test_mqtt311_broker_below_the_batch_size_loses_nothing_with_max_message_bytes(
    tmp_path: Path, limited_broker: Callable[..., LimitedBroker]
) -> None:
    broker = limited_broker(f"message_size_limit {BROKER_LIMIT_BYTES}")
    # ~500-byte records: a default batch (100 records) is ~50 KB, which this broker acknowledges and drops.
    counters = run_case(
        tmp_path, broker, ", max_message_bytes: 16384", pad_bytes=250, oversized=False, live=False
    )
    assert counters["outbox"].get("quarantined", 0) == 0


def test_mqtt311_default_max_message_bytes_fits_a_broker_of_aws_size(
    tmp_path: Path, limited_broker: Callable[..., LimitedBroker]
) -> None:
    # The default (128 KiB, AWS IoT Core's limit) below a 3.1.1 broker's 140,000-byte limit, with
    # 2.5 KB records: a 256 KiB batch (outbox.batch_max_bytes) would be acknowledged and dropped.
    broker = limited_broker("message_size_limit 140000")
    counters = run_case(tmp_path, broker, "", pad_bytes=2300, oversized=False, live=False)
    assert counters["outbox"].get("quarantined", 0) == 0


@pytest.mark.parametrize(
    "limit_line",
    [
        # Announced in the CONNACK: batches are sized to fit from the first one.
        f"max_packet_size {BROKER_LIMIT_BYTES}",
        # Not announced: mosquitto refuses each too-large PUBLISH with a PUBACK of reason 0x95.
        f"message_size_limit {BROKER_LIMIT_BYTES}",
    ],
)
def test_mqtt5_broker_limit_never_stalls_the_outbox_and_quarantines_what_never_fits(
    tmp_path: Path, limited_broker: Callable[..., LimitedBroker], limit_line: str
) -> None:
    broker = limited_broker(limit_line)
    counters = run_case(tmp_path, broker, ", protocol: mqttv5", pad_bytes=250, oversized=True, live=True)
    quarantined = db_rows(tmp_path / "data", "SELECT record_id, reason FROM outbox_quarantine ORDER BY 1")
    assert quarantined == [("oversized-alert", "too_large"), ("oversized-reading", "too_large")]
    assert counters["outbox"]["quarantined"] == 2
    forwarded = counters["forwarder"]
    assert forwarded["alerts_quarantined"] == 1 and forwarded["records_quarantined"] == 1
    assert counters["uplink"]["connects"] == 1, "a too-large message cost the connection"


# --- the uplink alone: the size a broker announces is the size checked ---------------------------


async def test_mqtt5_connack_limit_is_exact_and_a_larger_publish_is_refused_before_sending(
    limited_broker: Callable[..., LimitedBroker],
) -> None:
    broker = limited_broker(f"max_packet_size {BROKER_LIMIT_BYTES}")
    settings = MqttSection(host=broker.host, port=broker.port, tls=False, protocol="mqttv5")
    uplink = MqttUplink(settings, client_id="edgegw-sizes", will=None)
    await uplink.start()
    try:
        assert await uplink.wait_connected(5)
        assert uplink.max_message_bytes == BROKER_LIMIT_BYTES  # the CONNACK's, below the default
        topic, content_type = "edgegw/gw-sizes/up", "application/json"
        fits = uplink.max_payload_bytes(topic, content_type=content_type)
        assert BROKER_LIMIT_BYTES - 60 < fits < BROKER_LIMIT_BYTES
        # The broker closes the connection of a client whose packet exceeds max_packet_size:
        # a PUBACK here means the size computation did not undercount.
        await uplink.publish(topic, b"x" * fits, content_type=content_type)
        with pytest.raises(MessageTooLarge) as refused:
            await uplink.publish(topic, b"x" * (fits + 4), content_type=content_type)
        assert refused.value.limit_bytes == BROKER_LIMIT_BYTES
        assert refused.value.size_bytes > BROKER_LIMIT_BYTES
        await uplink.publish(topic, b"small", content_type=content_type)
        assert uplink.counters["connects"] == 1 and uplink.counters["too_large"] == 1
    finally:
        await uplink.stop()


def test_max_message_bytes_too_small_for_a_reading_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(f"gateway: {{id: gw}}\nmqtt: {{max_message_bytes: 1000}}\ndata_dir: {tmp_path}\n")
    with pytest.raises(ConfigError) as refused:
        config_mod.load(config_file, environ={})
    assert refused.value.key_path == "mqtt.max_message_bytes"


def test_inventory_pages_fit_the_message_size_limit() -> None:
    # 1,200 devices of ~330 bytes: 500 a page would be 165 KB, over AWS IoT Core's 128 KiB.
    devices = [
        {"dev_eui": f"{i:016x}", "profile": "milesight/em310-udl", "site": "lyon-3",
         "last_seen": "2026-11-25T18:14:02.511Z", "rssi_dbm": -97.0, "snr_db": 6.5, "fcnt": 1834,
         "battery": 92.0, "frames": 96, "frames_24h": 96, "errors": 0, "last_error": "x" * 120}
        for i in range(1200)
    ]  # fmt: skip
    limit = 131072 - 100
    pages = envelope.inventory("gw-1", "2026-11-25T18:15:00.000Z", devices, max_bytes=limit)
    docs = [json.loads(page) for page in pages]
    assert max(len(page) for page in pages) <= limit
    assert [d["page"] for d in docs] == list(range(1, len(docs) + 1))
    assert {d["pages"] for d in docs} == {len(docs)}
    assert [dev for d in docs for dev in d["devices"]] == devices
