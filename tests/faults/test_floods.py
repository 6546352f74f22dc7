"""Floods against the real agent process (issue 16, findings 4 UDP half and 5): a Semtech UDP
stat flood, idle control-socket connections, forged platform commands, and a third party
taking a forwarder's downlink route with PULL_DATA.

Each flood goes to ``python -m gateway run`` (tests/e2e/harness.AgentProcess) with a real
mosquitto, over 127.0.0.1, in a loop bounded in count and time; the tests assert the agent is
alive, still serves legitimate traffic, its RSS stays under RSS_LIMIT_MIB, and its log stays
short. The UDP, command and PULL_DATA floods share one agent (starting one costs seconds); the
idle-connection test has its own, because what it checks happens when the agent stops.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway.control.client import request
from gateway.fleet.sign import command, sign_envelope
from gateway.radio.semtech_udp.packets import PullAck, PullData, PullResp, parse
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker, Subscriber, free_port
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    minimal_config,
    register_abp,
    up_records,
    wait_ready,
)
from tests.faults.conftest import RSS_LIMIT_MIB, rss_mib

pytestmark = pytest.mark.e2e

UDP_MAX_PAYLOAD_BYTES = 65_507  # the largest UDP datagram over IPv4 (65,535 - 8 - 20)
FLOOD_EUIS = 1024
FLOOD_SECONDS = 5.0  # the reviewer's rate: 63 MiB in 5 s


@pytest.fixture
def agent_setup(tmp_path: Path, mosquitto: Broker, free_udp_port: int) -> tuple[Path, int, AbpDevice]:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    device = make_device(1)
    register_abp(config_file, device)
    return config_file, free_udp_port, device


@dataclass
class SharedAgent:
    """One agent, its broker and its registered device, for the floods that can share them."""

    config_file: Path
    udp_port: int
    device: AbpDevice
    broker: Broker
    agent: AgentProcess
    platform_key: Ed25519PrivateKey
    clients: list[mqtt.Client]

    def subscribe(self, topic_filter: str) -> Subscriber:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-sub-{len(self.clients)}")
        sub = Subscriber(client)
        subscribed = threading.Event()
        client.on_message = sub.on_message
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(topic_filter, qos=1)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        self.clients.append(client)
        assert subscribed.wait(5), f"could not subscribe to {topic_filter}"
        return sub

    def close_clients(self, first: int = 0) -> None:
        """Disconnects and stops the subscribers from index ``first`` on, and forgets them."""
        for client in self.clients[first:]:
            client.disconnect()
            client.loop_stop()
        del self.clients[first:]

    def radio_counters(self) -> dict[str, int]:
        status = request(self.config_file.parent / "data" / "control.sock", "status")
        counters: dict[str, int] = status["radio"]["counters"]
        return counters

    def tracebacks(self) -> list[str]:
        return _tracebacks(self.agent)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedAgent]:
    workdir = tmp_path_factory.mktemp("floods")
    (workdir / "mosquitto").mkdir()
    broker = Broker(port=free_port(), workdir=workdir / "mosquitto")
    broker.start()
    udp_port = free_port(socket.SOCK_DGRAM)
    config_file = minimal_config(workdir, udp_port, broker.port)
    device = make_device(1)
    register_abp(config_file, device)
    platform_key = Ed25519PrivateKey.generate()
    (workdir / "data" / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    agent = AgentProcess(config_file)
    env = SharedAgent(config_file, udp_port, device, broker, agent, platform_key, [])
    try:
        state = env.subscribe(f"edgegw/{GATEWAY_ID}/state")
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
        # Commands are not retained: the agent must be subscribed before the flood.
        state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m), 20)
        yield env
    finally:
        env.close_clients()
        try:
            code = agent.stop()
            assert code == 0, "\n".join(agent.lines[-30:])
            assert not _tracebacks(agent)
        finally:
            broker.stop()


@pytest.fixture
def subscribe_shared(shared: SharedAgent) -> Iterator[Callable[[str], Subscriber]]:
    """``subscribe_shared(topic_filter)``: a subscriber on the shared broker for one test, stopped
    after it (the agent is the module's; what a test starts is the test's to stop)."""
    first = len(shared.clients)
    yield shared.subscribe
    shared.close_clients(first)


def _stop(agent: AgentProcess) -> dict[str, Any]:
    code = agent.stop()
    assert code == 0, "\n".join(agent.lines[-30:])
    return agent.final_counters()


def _tracebacks(agent: AgentProcess) -> list[str]:
    return [line for line in agent.lines if "Traceback" in line]


# --------------------------------------------------------------------------- (a) stat flood


def stat_flood_datagram(eui: bytes, token: int, size_bytes: int) -> bytes:
    """A PUSH_DATA of exactly ``size_bytes`` whose stat holds thousands of keys (the costliest
    JSON to keep per byte: one dict entry per 11 bytes)."""
    head = bytes((2, token >> 8, token & 0xFF, 0)) + eui + b'{"stat":{"rxnb":1'
    entries = (size_bytes - len(head) - 2) // 11
    body = b"".join(b',"k%05d":0' % i for i in range(entries))
    datagram = head + body + b"}}"
    return datagram[:-2] + b" " * (size_bytes - len(datagram)) + b"}}"


def test_a_stat_flood_from_1024_gateway_euis_keeps_the_agent_small_and_serving(
    shared: SharedAgent, subscribe_shared: Callable[[str], Subscriber]
) -> None:
    agent, device = shared.agent, shared.device
    sub = subscribe_shared(f"edgegw/{GATEWAY_ID}/up")
    # Half of the flood at the UDP maximum (refused by size before parsing), half just under
    # 32 KiB (parsed, refused for its thousands of stat keys).
    sizes = (UDP_MAX_PAYLOAD_BYTES, 31 * 1024)
    templates = [stat_flood_datagram(b"\0" * 8, 0, size) for size in sizes]
    peak_mib = 0.0
    with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", shared.udp_port)) as fwd:
        fwd.send_frames([(device.uplink(em310(90, 1000, False), 85), {})])
        sub.wait_for(lambda _m: len(up_records(sub)) >= 1)
        before_mib = rss_mib(agent.proc.pid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            flood.connect(("127.0.0.1", shared.udp_port))
            start = time.monotonic()
            for i in range(FLOOD_EUIS):
                template = templates[i % 2]
                # a new gateway EUI and token each time, same bytes otherwise
                eui = (0xF100 + i).to_bytes(8, "big")
                flood.send(template[:1] + i.to_bytes(2, "big") + template[3:4] + eui + template[12:])
                if i % 32 == 31:
                    peak_mib = max(peak_mib, rss_mib(agent.proc.pid))
                # paced to FLOOD_SECONDS in all (bounded in time and count)
                ahead_s = start + FLOOD_SECONDS * (i + 1) / FLOOD_EUIS - time.monotonic()
                if ahead_s > 0:
                    time.sleep(ahead_s)
        for _ in range(10):  # what the agent kept, once it has read its socket buffer
            time.sleep(0.2)
            peak_mib = max(peak_mib, rss_mib(agent.proc.pid))
        assert agent.proc.poll() is None, "the agent died under the flood"
        fwd.send_frames([(device.uplink(em310(91, 1100, False), 85), {})])
        sub.wait_for(lambda _m: len(up_records(sub)) >= 2)
        after_mib = rss_mib(agent.proc.pid)
    radio = shared.radio_counters()
    print(
        f"\nstat flood: RSS {before_mib:.0f} MiB before, peak {peak_mib:.0f} MiB, {after_mib:.0f} MiB after;"
        f" refused too_large={radio.get('bad_datagram.datagram_too_large', 0)}"
        f" stat_too_large={radio.get('bad_datagram.stat_too_large', 0)} of {FLOOD_EUIS}"
    )
    assert peak_mib <= RSS_LIMIT_MIB and after_mib <= RSS_LIMIT_MIB
    assert [r["data"]["battery"] for r in up_records(sub)] == [90, 91]
    # Refusals are counted (the kernel may drop some datagrams of the flood: at most FLOOD_EUIS).
    assert radio.get("bad_datagram.datagram_too_large", 0) > 0
    assert radio.get("bad_datagram.stat_too_large", 0) > 0
    assert not shared.tracebacks()


# --------------------------------------------------------------------------- (b) idle control connections


def test_600_idle_control_connections_leave_no_traceback_and_status_still_answers(
    agent_setup: tuple[Path, int, AbpDevice],
) -> None:
    config_file, udp_port, _device = agent_setup
    socket_path = config_file.parent / "data" / "control.sock"
    agent = AgentProcess(config_file)
    idle: list[socket.socket] = []
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
        for _ in range(600):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(socket_path))
            idle.append(sock)
        status = cli(config_file, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)
        assert agent.proc.poll() is None
        assert rss_mib(agent.proc.pid) <= RSS_LIMIT_MIB
    finally:
        try:
            counters = _stop(agent)  # with the idle connections still open
        finally:
            for sock in idle:
                sock.close()
    control = counters.get("control", {})
    print(f"\n600 idle connections: control counters {control}, {len(_tracebacks(agent))} tracebacks")
    assert not _tracebacks(agent), "\n".join(agent.lines[-30:])
    assert not [line for line in agent.lines if " ERROR " in line]
    assert control.get("idle_evicted", 0) >= 600 - 32


# --------------------------------------------------------------------------- (c) forged commands

FORGED_COMMANDS = 20_000
WINDOW = 2000  # commands in flight at most: mosquitto's queue for the agent never overflows


def test_20000_forged_commands_give_a_few_log_lines_and_every_refusal_counted(
    shared: SharedAgent, subscribe_shared: Callable[[str], Subscriber]
) -> None:
    flush = command("flush")
    forged = [
        sign_envelope(Ed25519PrivateKey.generate(), flush, target=GATEWAY_ID),  # bad_signature
        sign_envelope(shared.platform_key, flush, target="gw-someone-else"),  # misaddressed
        sign_envelope(shared.platform_key, flush, target=GATEWAY_ID, issued_at=1_000_000),  # expired
    ]
    payloads = [json.dumps(envelope).encode() for envelope in forged] + [b"\xff not json"]  # + malformed
    results = subscribe_shared(f"edgegw/{GATEWAY_ID}/cmd-result")
    lines_before = len(shared.agent.lines)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood-publisher")
    publisher.max_inflight_messages_set(100)
    publisher.connect(shared.broker.host, shared.broker.port)
    publisher.loop_start()
    try:
        deadline = time.monotonic() + 45
        sent = 0
        while sent < FORGED_COMMANDS:
            assert time.monotonic() < deadline, f"only {len(results.messages)} answers in 45 s"
            batch = min(WINDOW, FORGED_COMMANDS - sent)
            for i in range(sent, sent + batch):
                publisher.publish(f"edgegw/{GATEWAY_ID}/cmd/flush", payloads[i % len(payloads)], qos=1)
            sent += batch
            results.wait_for(lambda m, n=sent: len(m) >= n, timeout_s=30)
            assert rss_mib(shared.agent.proc.pid) <= RSS_LIMIT_MIB
        assert shared.agent.proc.poll() is None
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    time.sleep(0.2)  # the log lines of the last answers
    refusal_lines = [
        line
        for line in shared.agent.lines[lines_before:]
        if "WARNING" in line and "refused" in line and "command" in line
    ]
    reasons: dict[str, int] = {}
    for message in results.messages:
        reason = json.loads(message.payload)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"\n{FORGED_COMMANDS} forged commands: {len(refusal_lines)} WARNING lines; refused {reasons}")
    assert reasons == {"bad_signature": 5000, "misaddressed": 5000, "expired": 5000, "malformed": 5000}
    # One line per reason per minute (the test runs in well under a minute).
    assert len(refusal_lines) <= 2 * len(reasons), "\n".join(refusal_lines[:20])
    assert not shared.tracebacks()


# --------------------------------------------------------------------------- (d) PULL_DATA hijack


class Intruder:
    """A third party on another host (127.0.0.2) that sends PULL_DATA with someone else's EUI."""

    def __init__(self, gateway_eui: bytes, udp_port: int) -> None:
        self.gateway_eui = gateway_eui
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 0))
        self.sock.connect(("127.0.0.1", udp_port))
        self.received: list[Any] = []

    def pull(self, token: int, timeout_s: float) -> bool:
        """True when the agent answered the PULL_DATA with a PULL_ACK."""
        self.sock.send(PullData(token, self.gateway_eui).to_bytes())
        return any(isinstance(p, PullAck) for p in self.listen(timeout_s))

    def listen(self, timeout_s: float) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left_s)
            try:
                got.append(parse(self.sock.recv(65535)))
            except (TimeoutError, ConnectionRefusedError):
                break
        self.received += got
        return got

    def close(self) -> None:
        self.sock.close()


def test_pull_data_with_a_forwarders_eui_from_another_host_does_not_take_its_downlinks(
    shared: SharedAgent,
) -> None:
    eui = bytes.fromhex("b827ebfffe00d00d")  # a forwarder of its own: the other tests' one stays pinned
    moved_before = shared.radio_counters().get("pull_data_moved", 0)
    intruder = Intruder(eui, shared.udp_port)
    try:
        with PacketForwarder(eui, ("127.0.0.1", shared.udp_port)) as real:
            wait_ready(real)
            hijacked = [intruder.pull(token, timeout_s=0.3) for token in range(3)]
            uplink = shared.device.uplink(em310(90, 1800, False), 85, confirmed=True)
            real.send_frames([(uplink, {"tmst_us": 5_000_000})])
            to_real = real.wait_downlink(timeout_s=5.0)
            intruder.listen(0.5)
            stop = threading.Event()

            def keepalive() -> None:  # the real forwarder's PULL_DATA, every 0.5 s
                while not stop.wait(0.5):
                    real.pull(timeout_s=0.2)

            thread = threading.Thread(target=keepalive)
            thread.start()
            try:
                more_hijacks = [intruder.pull(token, timeout_s=0.3) for token in range(3, 6)]
            finally:
                stop.set()
                thread.join()
    finally:
        intruder.close()
    moved = shared.radio_counters().get("pull_data_moved", 0) - moved_before
    print(f"\nPULL_DATA hijack: pull_data_moved={moved}, intruder received {intruder.received}")
    assert not any(hijacked), "the intruder got a PULL_ACK"
    assert to_real is not None, "the ACK downlink did not reach the real forwarder"
    assert not [p for p in intruder.received if isinstance(p, PullResp)], "a downlink went to the intruder"
    assert not any(more_hijacks)
    assert moved == 6
    assert not shared.tracebacks()
