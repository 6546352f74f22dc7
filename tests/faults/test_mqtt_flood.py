"""Issue 16, finding 4 (MQTT half): a flood of large MQTT messages on a subscribed topic.

3,000 messages of 100 KiB on ``<prefix>/<gw>/cmd/flush``, published by a paho client as fast as the
real mosquitto takes them (QoS 1, so the broker delivers every one), against the agent process. The
agent's resident memory is sampled every 50 ms while the flood lasts and until the agent has
refused every message (its ``health`` message says so): it stays within ``RSS_LIMIT_MIB``; the agent
stays alive and connected (one connection from start to end), still answers a small command, and
reports the refusals in health and in its final counters.

Before the fix (the reviewer's figures): RSS peaked at 205-1,017 MiB, because each payload was
copied to the event loop (``call_soon_threadsafe``) before the 64 KiB check of the signed envelope.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttSection
from gateway.uplink import mqtt as uplink_mqtt
from gateway.uplink.mqtt import MqttUplink
from tests.conftest import Broker, Subscriber
from tests.e2e.harness import GATEWAY_ID, AgentProcess, minimal_config
from tests.faults.conftest import RSS_LIMIT_MIB, rss_mib

FLOOD_MESSAGES = 3000
FLOOD_PAYLOAD_BYTES = 100 * 1024
SAMPLE_EVERY_S = 0.05
PUBLISH_WINDOW = 50
"""Messages the flooding client has in flight at most (its own memory stays small)."""
FLOOD_TIMEOUT_S = 40.0
ROOT = f"edgegw/{GATEWAY_ID}"


class RssSampler:
    """Samples a process's RSS every ``SAMPLE_EVERY_S`` in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_mib(self.pid))
            except (OSError, AssertionError):
                return  # the process is gone: the test sees it
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mib(self) -> float:
        return max(self.samples, default=0.0)


def flood(broker: Broker, topic: str) -> float:
    """Publish ``FLOOD_MESSAGES`` payloads of ``FLOOD_PAYLOAD_BYTES`` at QoS 1, as fast as the broker
    acknowledges them; returns the seconds it took."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_inflight_messages_set(PUBLISH_WINDOW)
    client.connect(broker.host, broker.port)
    client.loop_start()
    payload = b"\xa5" * FLOOD_PAYLOAD_BYTES
    started = time.monotonic()
    try:
        window: list[mqtt.MQTTMessageInfo] = []
        for _ in range(FLOOD_MESSAGES):
            window.append(client.publish(topic, payload, qos=1))
            if len(window) >= PUBLISH_WINDOW:
                window[0].wait_for_publish(10)
                window = [info for info in window if not info.is_published()]
            assert time.monotonic() - started < FLOOD_TIMEOUT_S, "the broker did not take the flood in time"
        for info in window:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - started


def last_health(sub: Subscriber) -> dict[str, Any] | None:
    docs = sub.json_on(f"{ROOT}/health")
    return docs[-1] if docs else None


def refused_too_large(health: dict[str, Any] | None) -> int:
    if health is None:
        return 0
    return int(health["uplink"].get("inbound_refused", {}).get("too_large", 0))


def test_a_flood_of_large_mqtt_messages_keeps_rss_bounded_and_the_agent_connected(
    tmp_path: Path, free_udp_port: int, mosquitto: Broker, subscribe: Any
) -> None:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    config_file.write_text(
        config_file.read_text().replace("tls: false}", "tls: false, health_interval_s: 0.5}")
        + "log: {stats_interval_s: 0}\n"
    )
    sub = subscribe(f"{ROOT}/#")
    agent = AgentProcess(config_file)
    try:
        sub.wait_for(lambda _m: last_health(sub) is not None, timeout_s=20.0)
        before_mib = rss_mib(agent.proc.pid)
        with RssSampler(agent.proc.pid) as sampler:
            took_s = flood(mosquitto, f"{ROOT}/cmd/flush")
            sub.wait_for(lambda _m: refused_too_large(last_health(sub)) >= FLOOD_MESSAGES, FLOOD_TIMEOUT_S)
        assert agent.proc.poll() is None, "the agent died under the flood:\n" + "\n".join(agent.lines[-20:])
        health = last_health(sub)
        assert health is not None and health["uplink"]["state"] == "connected"

        # Still listening: a small (unsigned) command is read and answered, refused as unsigned.
        answered = len(sub.json_on(f"{ROOT}/cmd-result"))
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="small-cmd")
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        client.publish(f"{ROOT}/cmd/flush", json.dumps({"not": "signed"}), qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        sub.wait_for(lambda _m: len(sub.json_on(f"{ROOT}/cmd-result")) > answered, timeout_s=10.0)
    finally:
        code = agent.stop()
    assert code == 0, "\n".join(agent.lines[-20:])
    uplink = agent.final_counters()["uplink"]
    print(
        f"flood of {FLOOD_MESSAGES} x {FLOOD_PAYLOAD_BYTES} B in {took_s:.1f} s: "
        f"agent RSS {before_mib:.0f} MiB before, peak {sampler.peak_mib:.0f} MiB "
        f"over {len(sampler.samples)} samples; uplink counters {uplink}"
    )
    assert sampler.peak_mib <= RSS_LIMIT_MIB, f"RSS peaked at {sampler.peak_mib:.0f} MiB"
    assert len(sampler.samples) >= 10, "too few RSS samples: the flood was not observed"
    assert uplink["inbound_refused.too_large"] == FLOOD_MESSAGES
    assert uplink["connects"] == 1, "the flood cost the connection"
    assert uplink.get("handler_errors", 0) == 0
    warned = [line for line in agent.lines if "refused (at most" in line and "WARNING" in line]
    assert len(warned) == 1, f"{len(warned)} WARNING lines for {FLOOD_MESSAGES} refusals (rate-limited: one)"


# --- the uplink alone (in this process): per-subscription caps, the bounded queue -----------------


def _uplink(broker: Broker) -> MqttUplink:
    settings = MqttSection(host=broker.host, port=broker.port, tls=False, keepalive_s=10, reconnect_max_s=1.0)
    return MqttUplink(settings, client_id="edgegw-inbound", will=None)


def _publish_many(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="inbound-publisher")
    client.max_inflight_messages_set(PUBLISH_WINDOW)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_each_subscription_has_its_own_payload_cap(mosquitto: Broker) -> None:
    uplink = _uplink(mosquitto)
    got: dict[str, list[int]] = {"small": [], "large": []}
    uplink.subscribe("t/small", lambda _t, p: got["small"].append(len(p)))
    uplink.subscribe("t/large", lambda _t, p: got["large"].append(len(p)), max_payload_bytes=256 * 1024)
    await uplink.start()
    try:
        assert await uplink.wait_connected(5)
        await asyncio.sleep(0.2)  # the SUBACKs
        big, small = b"b" * (100 * 1024), b"s" * (64 * 1024)
        await asyncio.to_thread(
            _publish_many, mosquitto, [("t/small", big), ("t/small", small), ("t/large", big)]
        )
        await _until(lambda: len(got["small"]) + len(got["large"]) >= 2, 10.0, "the messages that fit")
        await _until(lambda: uplink.counters["inbound_refused.too_large"] >= 1, 5.0, "the refusal count")
    finally:
        await uplink.stop()
    assert got == {"small": [64 * 1024], "large": [100 * 1024]}
    assert uplink.counters["inbound_refused.too_large"] == 1
    assert uplink.status()["inbound_refused"] == {"too_large": 1}


async def test_the_inbound_queue_is_bounded_while_the_loop_is_busy(mosquitto: Broker) -> None:
    """A loop stalled longer than the network thread waits for room: what exceeds the queue is
    dropped and counted (never held in memory); every message is either handled or counted."""
    total = uplink_mqtt.INBOUND_QUEUE_MESSAGES + 200
    uplink = _uplink(mosquitto)
    handled: list[int] = []
    first = threading.Event()

    def handler(_topic: str, payload: bytes) -> None:
        if not first.is_set():
            first.set()
            time.sleep(3 * uplink_mqtt.INBOUND_FULL_WAIT_S)  # the loop stalls (a slow disk, a long GC)
        handled.append(len(payload))

    uplink.subscribe("t/q", handler)
    await uplink.start()
    try:
        assert await uplink.wait_connected(5)
        await asyncio.sleep(0.2)
        publisher = asyncio.create_task(
            asyncio.to_thread(_publish_many, mosquitto, [("t/q", b"q" * 1024)] * total)
        )
        await publisher

        def accounted() -> bool:
            return len(handled) + uplink.counters["inbound_refused.queue_full"] >= total

        await _until(accounted, 15.0, "every message handled or counted")
    finally:
        await uplink.stop()
    dropped = uplink.counters["inbound_refused.queue_full"]
    assert dropped >= 1, "the stalled loop never filled the queue: the test premise is broken"
    assert len(handled) + dropped == total
    assert uplink.counters["connects"] == 1



BIG_MESSAGE_BYTES = 100 * 1024 * 1024
"""One message of the size the review sent (mosquitto's default limit is 256 MB): RSS 57 → 329 MiB."""


def test_one_huge_message_on_mqtt5_is_dropped_by_the_broker_not_read_by_the_agent(
    tmp_path: Path, free_udp_port: int, mosquitto: Broker
) -> None:
    # MQTT 5: the agent's CONNECT says its Maximum Packet Size (largest subscription cap + 64 KiB),
    # so the broker drops the message; paho would otherwise read all of it before our check.
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    config_file.write_text(
        config_file.read_text().replace("tls: false}", "tls: false, protocol: mqttv5}")
        + "log: {stats_interval_s: 0}\n"
    )
    agent = AgentProcess(config_file)
    try:
        deadline = time.monotonic() + 20
        while not any("connected to" in line for line in agent.lines):
            assert time.monotonic() < deadline, "\n".join(agent.lines[-20:])
            time.sleep(0.1)
        with RssSampler(agent.proc.pid) as sampler:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="huge", protocol=mqtt.MQTTv5)
            client.connect(mosquitto.host, mosquitto.port)
            client.loop_start()
            client.publish(f"{ROOT}/cmd/flush", b"\x5a" * BIG_MESSAGE_BYTES, qos=1).wait_for_publish(30)
            client.disconnect()
            client.loop_stop()
            time.sleep(2.0)  # what the broker would deliver has been delivered
        assert agent.proc.poll() is None
    finally:
        code = agent.stop()
    assert code == 0
    print(f"one {BIG_MESSAGE_BYTES} B message: agent RSS peak {sampler.peak_mib:.0f} MiB")
    assert sampler.peak_mib <= RSS_LIMIT_MIB, f"RSS peaked at {sampler.peak_mib:.0f} MiB"
