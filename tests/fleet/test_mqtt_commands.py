"""Commands over a real mosquitto: ``<prefix>/<id>/cmd/<name>`` reaches a subscribed ``MqttUplink``,
runs, and is answered on ``cmd-result``; the subscription is renewed after the broker comes back.

Source: ARCHITECTURE.md §3.2 (topics ``cmd/{name}`` and ``cmd-result``); MQTT 3.1.1 §3.1.2.4 (a
clean session keeps no subscriptions across a reconnect, hence the re-subscription checked here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import MqttSection
from gateway.fleet.commands import CommandDispatcher
from gateway.fleet.trust import Trust
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics
from tests.fleet.conftest import GATEWAY_ID, Signer

TOPICS = Topics("edgegw", GATEWAY_ID)


@pytest.fixture
async def uplink(mosquitto: Any) -> AsyncIterator[MqttUplink]:
    settings = MqttSection(
        host=mosquitto.host,
        port=mosquitto.port,
        tls=False,
        keepalive_s=10,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    up = MqttUplink(settings, client_id=f"edgegw-{GATEWAY_ID}", will=None)
    yield up
    await up.stop()


async def send_until_answered(
    mosquitto: Any, sub: Any, make: Callable[[int], bytes], name: str, first_seq: int, attempts: int = 5
) -> dict[str, Any]:
    """Publish a freshly signed envelope (new seq each time) until a result for it arrives.

    A retry covers the short window in which the gateway's SUBSCRIBE is not yet processed by
    the broker; each attempt waits at most 1 s, so this ends within ``attempts`` seconds.
    """
    for seq in range(first_seq, first_seq + attempts):
        await asyncio.to_thread(
            paho.mqtt.publish.single,
            TOPICS.cmd(name),
            make(seq),
            qos=1,
            hostname=mosquitto.host,
            port=mosquitto.port,
        )
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for doc in sub.json_on(TOPICS.cmd_result):
                if doc["seq"] == seq:
                    result: dict[str, Any] = doc
                    return result
            await asyncio.sleep(0.02)
    pytest.fail(f"no cmd-result for {name} after {attempts} attempts")


async def test_command_over_mqtt_runs_and_is_answered_also_after_a_reconnect(
    mosquitto: Any,
    subscribe: Any,
    uplink: MqttUplink,
    data_dir: Path,
    signed: Signer,
    platform_key: Ed25519PrivateKey,
) -> None:
    flushed: list[dict[str, Any]] = []
    dispatcher = CommandDispatcher(Trust(data_dir, gateway_id=GATEWAY_ID))

    def flush(params: dict[str, Any]) -> dict[str, Any]:
        flushed.append(params)
        return {"flushing": True}

    dispatcher.register("flush", flush)

    async def publish_result(payload: bytes) -> None:
        await uplink.publish(TOPICS.cmd_result, payload)

    uplink.subscribe(TOPICS.cmd_filter, dispatcher.mqtt_handler(publish_result))
    results = subscribe(TOPICS.cmd_result)
    await uplink.start()
    assert await uplink.wait_connected(10)

    now = int(time.time())
    result = await send_until_answered(
        mosquitto, results, lambda s: signed("flush", seq=s, issued_at=now), "flush", 1
    )
    assert result["ok"] is True and result["result"] == {"flushing": True} and result["v"] == 1
    assert flushed and uplink.counters["received"] >= 1

    # A forged one on the same topic is refused with a reason and does not run.
    runs = len(flushed)
    forged = lambda s: signed("flush", seq=s, issued_at=now, key=Ed25519PrivateKey.generate())  # noqa: E731
    result = await send_until_answered(mosquitto, results, forged, "flush", 100)
    assert (result["ok"], result["reason"]) == (False, "bad_signature")
    assert len(flushed) == runs

    # The broker restarts (no persistence: all subscriptions are gone); the uplink subscribes again.
    mosquitto.stop()
    mosquitto.start()
    for _ in range(150):  # up to 15 s for the uplink to notice and connect again
        if uplink.counters["connects"] >= 2 and uplink.connected:
            break
        await asyncio.sleep(0.1)
    assert uplink.counters["connects"] >= 2, "did not reconnect within 15 s"
    results = subscribe(TOPICS.cmd_result)
    result = await send_until_answered(
        mosquitto, results, lambda s: signed("flush", seq=s, issued_at=now), "flush", 1000
    )
    assert result["ok"] is True
    assert len(flushed) > runs
    assert dispatcher.counters["rejected_bad_signature"] >= 1


async def test_a_failing_handler_is_counted_and_does_not_stop_delivery(
    mosquitto: Any, uplink: MqttUplink
) -> None:
    got: list[tuple[str, bytes]] = []

    def broken(topic: str, payload: bytes) -> None:
        raise RuntimeError("bug in a handler")

    uplink.subscribe("t/broken", broken)
    uplink.subscribe("t/#", lambda topic, payload: got.append((topic, payload)))
    await uplink.start()
    assert await uplink.wait_connected(10)
    for attempt in range(50):  # bounded: up to 5 s, publishing until the subscriptions are in place
        await asyncio.to_thread(
            paho.mqtt.publish.single,
            "t/broken",
            b"x%d" % attempt,
            hostname=mosquitto.host,
            port=mosquitto.port,
        )
        await asyncio.sleep(0.1)
        if got:
            break
    assert got and got[0][0] == "t/broken"
    assert uplink.counters["handler_errors"] >= 1
    assert uplink.connected
