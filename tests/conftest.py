"""Shared fixtures: a real mosquitto on a free loopback port, free ports, an MQTT subscriber.

Everything here talks to 127.0.0.1 only. Processes started by a fixture are
stopped by it; a test that leaves one behind (or a thread, a socket, an asyncio task) fails:
tests/leak_guard.py, loaded for every test below.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator.broker import MOSQUITTO, Mosquitto
from simulator.broker import free_port as free_port  # the tests import it from here

# pytester: tests/test_leak_guard.py runs the guard on tests it writes.
pytest_plugins = ["tests.leak_guard", "pytester"]

# The folders whose files run real agents, brokers and simulated days, slowest first. `make test`
# hands whole files to 2 workers in the order collected (pytest-xdist --dist loadfile): started last,
# a 40 s file kept one worker busy while the other sat idle at the end of the run.
_SLOW_FIRST = ("chaos", "reliability", "multigw", "e2e", "faults", "simulator", "fleet", "firmware")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the slow folders' tests first (a stable sort: the order inside each file stays)."""

    def rank(item: pytest.Item) -> int:
        parts = item.path.parts
        folder = parts[parts.index("tests") + 1] if "tests" in parts[:-1] else ""
        return _SLOW_FIRST.index(folder) if folder in _SLOW_FIRST else len(_SLOW_FIRST)

    items.sort(key=rank)


@pytest.fixture
def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


class Broker(Mosquitto):
    """A mosquitto process on 127.0.0.1:port that a test can stop and start again (not persistent)."""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto broker on a free loopback port, stopped after the test."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            "mosquitto is not installed: run the README's test command (make test), which installs it"
        )
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Broker(port=free_port(), workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Subscriber:
    """A paho client subscribed to a topic filter, collecting messages for assertions."""

    client: mqtt.Client
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> list[mqtt.MQTTMessage]:
        """Wait until ``predicate(messages)`` is true; return the messages (fails the test on timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [m.topic for m in self.messages]
                    pytest.fail(
                        f"timed out after {timeout_s} s; got {len(self.messages)} messages: {topics[:10]}"
                    )
                self._cond.wait(remaining)
            return list(self.messages)

    def json_on(self, topic: str) -> list[Any]:
        with self._cond:
            return [json.loads(m.payload) for m in self.messages if m.topic == topic]


@pytest.fixture
def subscribe(mosquitto: Broker) -> Iterator[Any]:
    """``subscribe(topic_filter) -> Subscriber``: a real MQTT subscriber on the test broker."""
    clients: list[mqtt.Client] = []

    def make(topic_filter: str) -> Subscriber:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{len(clients)}")
        sub = Subscriber(client)
        subscribed = threading.Event()
        client.on_message = sub.on_message
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(topic_filter, qos=1)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        clients.append(client)
        if not subscribed.wait(5):
            pytest.fail(f"could not subscribe to {topic_filter}")
        return sub

    yield make
    for client in clients:
        client.disconnect()
        client.loop_stop()
