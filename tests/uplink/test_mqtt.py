"""The MQTT uplink against a real mosquitto on 127.0.0.1, plus the pure topic and state formats.

What is checked comes from MQTT 3.1.1 (OASIS standard, 2014): §3.4 PUBACK ends a
QoS 1 publish; §3.1.2.5 the will is published when the network connection closes
without a DISCONNECT packet, and §3.14.4 it is discarded after a DISCONNECT;
§3.3.1.3 a retained message is delivered to later subscribers. Topic layout and
the state message are ARCHITECTURE.md §3.2.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config import MqttSection
from gateway.errors import UplinkError
from gateway.uplink import envelope
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_SCHEMA = json.loads(resources.files("gateway").joinpath("schemas/state-v1.json").read_text())


def settings_for(broker: Any) -> MqttSection:
    return MqttSection(host=broker.host, port=broker.port, tls=False, keepalive_s=10, reconnect_max_s=2.0)


@pytest.fixture
async def uplinks() -> AsyncIterator[Callable[..., MqttUplink]]:
    """``uplinks(settings, client_id=..., will=...)``: uplinks that are stopped after the test."""
    made: list[MqttUplink] = []

    def make(settings: MqttSection, *, client_id: str, will: tuple[str, bytes] | None = None) -> MqttUplink:
        uplink = MqttUplink(settings, client_id=client_id, will=will)
        made.append(uplink)
        return uplink

    yield make
    for uplink in made:
        await uplink.stop()


async def wait_messages(
    sub: Any, predicate: Callable[[list[Any]], bool], timeout_s: float = 10.0
) -> list[Any]:
    """The fixture's blocking wait, in a thread so the event loop (and the uplink) keeps running."""
    result: list[Any] = await asyncio.to_thread(sub.wait_for, predicate, timeout_s)
    return result


# --- topics and the state message (pure) ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("up", "edgegw/gw-01/up"),
        ("alert", "edgegw/gw-01/alert"),
        ("state", "edgegw/gw-01/state"),
        ("health", "edgegw/gw-01/health"),
        ("cmd_result", "edgegw/gw-01/cmd-result"),
        ("config", "edgegw/gw-01/config"),
        ("config_state", "edgegw/gw-01/config-state"),
        ("cmd_filter", "edgegw/gw-01/cmd/+"),
    ],
)
def test_topic_names(name: str, expected: str) -> None:
    assert getattr(Topics("edgegw", "gw-01"), name) == expected


def test_command_topic_and_multi_level_prefix() -> None:
    assert Topics("edgegw", "gw-01").cmd("reboot") == "edgegw/gw-01/cmd/reboot"
    assert Topics("city/air", "gw_7").up == "city/air/gw_7/up"


@pytest.mark.parametrize(
    ("prefix", "gateway_id"),
    [("", "gw"), ("edgegw", ""), ("edge/+", "gw"), ("edgegw", "gw/1"), ("edgegw", "gw#"), ("a//b", "gw")],
)
def test_topics_refuse_wildcards_and_empty_levels(prefix: str, gateway_id: str) -> None:
    with pytest.raises(ValueError):
        Topics(prefix, gateway_id)


def test_command_name_must_be_one_level() -> None:
    with pytest.raises(ValueError):
        Topics("edgegw", "gw").cmd("a/b")


def test_state_message_bytes_and_schema() -> None:
    online = envelope.state(True, "0.1.0", "2024-05-01T12:00:00.000Z")
    offline = envelope.state(False, "0.1.0", "2024-05-01T12:00:00.000Z")

    assert online == b'{"v":1,"state":"online","version":"0.1.0","at":"2024-05-01T12:00:00.000Z"}'
    assert json.loads(offline)["state"] == "offline"
    jsonschema.validate(json.loads(online), STATE_SCHEMA)
    jsonschema.validate(json.loads(offline), STATE_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"v": 1, "state": "sleeping", "version": "0.1.0", "at": "x"}, STATE_SCHEMA)


# --- the connection ------------------------------------------------------------------------


async def test_publish_resolves_on_puback_and_the_subscriber_gets_it(
    mosquitto: Any, subscribe: Any, uplinks: Any
) -> None:
    sub = subscribe("t/#")
    uplink = uplinks(settings_for(mosquitto), client_id="edgegw-test-pub")
    await uplink.start()
    assert await uplink.wait_connected(5.0)
    assert uplink.connected

    await asyncio.wait_for(uplink.publish("t/one", b"hello", qos=1), timeout=5.0)

    assert uplink.counters["puback"] == 1
    assert uplink.counters["published"] == 1
    messages = await wait_messages(sub, lambda msgs: len(msgs) >= 1)
    assert (messages[0].topic, messages[0].payload, messages[0].qos) == ("t/one", b"hello", 1)


async def test_many_concurrent_publishes_each_resolve(mosquitto: Any, subscribe: Any, uplinks: Any) -> None:
    sub = subscribe("t/#")
    uplink = uplinks(settings_for(mosquitto), client_id="edgegw-test-many")
    await uplink.start()
    assert await uplink.wait_connected(5.0)

    await asyncio.wait_for(
        asyncio.gather(*(uplink.publish("t/many", str(i).encode()) for i in range(500))), timeout=20.0
    )

    assert uplink.counters["puback"] == 500
    messages = await wait_messages(sub, lambda msgs: len(msgs) >= 500)
    assert sorted(int(m.payload) for m in messages) == list(range(500))


async def test_publish_without_a_broker_raises(mosquitto: Any, uplinks: Any) -> None:
    mosquitto.stop()
    uplink = uplinks(settings_for(mosquitto), client_id="edgegw-test-down")
    await uplink.start()

    assert not await uplink.wait_connected(0.5)
    with pytest.raises(UplinkError):
        await uplink.publish("t/x", b"lost")
    assert uplink.counters["connect_failures"] >= 1


async def test_broker_loss_fails_pending_publishes_then_reconnects_by_itself(
    mosquitto: Any, subscribe: Any, uplinks: Any
) -> None:
    uplink = uplinks(settings_for(mosquitto), client_id="edgegw-test-reconnect")
    hook_calls: list[bool] = []
    uplink.add_connect_hook(lambda: hook_calls.append(uplink.connected))
    await uplink.start()
    assert await uplink.wait_connected(5.0)
    assert hook_calls == [True]

    # Freeze the broker: the PUBLISH reaches its socket but no PUBACK can come back.
    mosquitto.proc.send_signal(signal.SIGSTOP)
    pending = asyncio.create_task(uplink.publish("t/x", b"in flight"))
    await asyncio.sleep(0.3)
    assert not pending.done(), "publish must wait for the PUBACK"

    mosquitto.proc.kill()  # SIGKILL also ends a stopped process
    mosquitto.proc.wait(5)
    mosquitto.stop()
    with pytest.raises(UplinkError):
        await asyncio.wait_for(pending, timeout=5.0)
    assert not uplink.connected
    assert uplink.counters["disconnects"] == 1
    with pytest.raises(UplinkError):
        await uplink.publish("t/x", b"while down")

    mosquitto.start()
    sub = subscribe("t/#")
    assert await uplink.wait_connected(15.0), "did not reconnect within 15 s"
    await asyncio.wait_for(uplink.publish("t/x", b"after"), timeout=5.0)

    messages = await wait_messages(sub, lambda msgs: any(m.payload == b"after" for m in msgs))
    # The failed message is not resent by paho behind our back: the caller owns the retry.
    await asyncio.sleep(0.2)
    assert [m.payload for m in messages if m.payload == b"in flight"] == []
    assert uplink.counters["connects"] == 2
    assert hook_calls == [True, True]


async def test_will_is_published_retained_when_the_agent_dies(
    mosquitto: Any, subscribe: Any, tmp_path: Path
) -> None:
    topics = Topics("edgegw", "gw-will")
    sub = subscribe(topics.state)
    will = envelope.state(False, "0.1.0", "2024-05-01T12:00:00.000Z")
    # A separate process runs the uplink so that it can die without a DISCONNECT (kill -9).
    script = textwrap.dedent(
        f"""
        import asyncio
        from gateway.config import MqttSection
        from gateway.uplink.mqtt import MqttUplink

        async def main():
            settings = MqttSection(host={mosquitto.host!r}, port={mosquitto.port}, tls=False)
            uplink = MqttUplink(settings, client_id="edgegw-victim", will=({topics.state!r}, {will!r}))
            await uplink.start()
            print("connected" if await uplink.wait_connected(10) else "failed", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, env=env, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=15.0)
        assert line.strip() == b"connected"
        await asyncio.sleep(0.3)
        assert sub.json_on(topics.state) == []
    finally:
        proc.kill()
        await asyncio.wait_for(proc.wait(), timeout=5.0)

    messages = await wait_messages(sub, lambda msgs: len(msgs) >= 1)
    assert json.loads(messages[0].payload) == json.loads(will)
    jsonschema.validate(json.loads(messages[0].payload), STATE_SCHEMA)
    late = subscribe(topics.state)
    retained = await wait_messages(late, lambda msgs: len(msgs) >= 1)
    assert retained[0].retain
    assert json.loads(retained[0].payload)["state"] == "offline"


async def test_clean_stop_does_not_send_the_will(mosquitto: Any, subscribe: Any) -> None:
    topics = Topics("edgegw", "gw-clean")
    sub = subscribe(topics.state)
    will = envelope.state(False, "0.1.0", "2024-05-01T12:00:00.000Z")
    uplink = MqttUplink(settings_for(mosquitto), client_id="edgegw-clean", will=(topics.state, will))
    online = envelope.state(True, "0.1.0", "2024-05-01T12:00:01.000Z")
    sent: list[asyncio.Task[None]] = []
    uplink.add_connect_hook(
        lambda: sent.append(asyncio.create_task(uplink.publish(topics.state, online, retain=True)))
    )
    await uplink.start()
    try:
        assert await uplink.wait_connected(5.0)
        await wait_messages(sub, lambda msgs: len(msgs) >= 1)
        await asyncio.wait_for(sent[0], timeout=5.0)
    finally:
        await uplink.stop()
    assert not uplink.connected

    # The broker has handled the DISCONNECT well within this; a will would be here by now.
    await asyncio.sleep(0.5)
    assert [m["state"] for m in sub.json_on(topics.state)] == ["online"]
    late = subscribe(topics.state)
    retained = await wait_messages(late, lambda msgs: len(msgs) >= 1)
    assert json.loads(retained[0].payload)["state"] == "online"
    with pytest.raises(UplinkError):
        await uplink.publish(topics.state, online)
