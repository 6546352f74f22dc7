"""A full disk against the agent process: data_dir on a 16 MiB tmpfs that an outside file fills
for a few seconds, then frees (the issue's reproduction, finding 1).

Asserted, as docs/outbox.md promises: every frame accepted before, during and after the full
disk reaches the broker (duplicates allowed, with the same id); nothing is evicted; the
configured bound is what ``status`` shows; ``status`` says "disk full since T" while it lasts;
an agent started on a full disk still delivers its backlog. Before: with an empty outbox every
later reading (100 of 100) was evicted; with 2,000 committed records waiting, all were evicted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, make_device, register_abp, wait_ready
from tests.faults.conftest import SmallDisk
from tests.reliability.conftest import DurableSubscriber, PersistentBroker, free_port

pytestmark = pytest.mark.timeout(180)

GATEWAY_ID = "gw-disk"


def agent_config(
    tmp_path: Path, disk: SmallDisk, broker_port: int, *, reserve_bytes: int = 1048576
) -> tuple[Path, int]:
    udp_port = free_port(2)
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, tls: false, reconnect_min_s: 0.1, "
        "reconnect_max_s: 0.5, health_interval_s: 0}\n"
        "outbox: {commit_interval_ms: 20, batch_max_records: 50, batch_linger_ms: 20, "
        f"disk_reserve_bytes: {reserve_bytes}}}\n"
        "log: {stats_interval_s: 0}\n"
        f"data_dir: {disk.path / 'data'}\n"
    )
    return config_file, udp_port


class Sender:
    """One device's frames through a simulated packet forwarder; remembers every FCnt sent."""

    def __init__(self, fwd: PacketForwarder, device: AbpDevice) -> None:
        self.fwd, self.device = fwd, device
        self.sent: list[int] = []

    def send(self, n: int, period_s: float = 0.01) -> None:
        for _ in range(n):
            fcnt = self.device.fcnt_up
            self.fwd.send_frames([(self.device.uplink(em310(80, 1000 + len(self.sent), False), 85), {})])
            self.sent.append(fcnt)
            time.sleep(period_s)


def delivered_fcnts(sub: DurableSubscriber) -> set[int]:
    return {int(r["fcnt"]) for r in list(sub.records) if r.get("kind") == "reading"}


def wait_delivered(sub: DurableSubscriber, count: int, timeout_s: float = 30.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = delivered_fcnts(sub)
        if len(got) >= count:
            return got
        time.sleep(0.1)
    return delivered_fcnts(sub)


def status(config_file: Path) -> dict[str, Any]:
    done = cli(config_file, "status", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.fixture
def sub(persistent_broker: PersistentBroker) -> Iterator[DurableSubscriber]:
    subscriber = DurableSubscriber(persistent_broker, f"edgegw/{GATEWAY_ID}/up", client_id="disk-sub")
    try:
        yield subscriber
    finally:
        subscriber.close()


def test_full_disk_for_seconds_then_freed_loses_nothing(
    tmp_path: Path, small_disk: SmallDisk, persistent_broker: PersistentBroker, sub: DurableSubscriber
) -> None:
    config_file, udp_port = agent_config(tmp_path, small_disk, persistent_broker.port)
    device = make_device(1)
    register_abp(config_file, device)
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            frames = Sender(fwd, device)
            frames.send(10)
            assert len(wait_delivered(sub, 10)) == 10
            small_disk.fill()
            frames.send(5)  # the first failed group gives up the reserve...
            time.sleep(1.5)
            small_disk.fill()  # ...which the outside writer takes too: now nothing fits
            frames.send(20, period_s=0.1)
            doc = status(config_file)
            assert doc["storage"]["disk_full_since"], doc["storage"]
            time.sleep(1.0)  # the 3 s of full disk, all told
            small_disk.free()
            frames.send(100)
            got = wait_delivered(sub, 135)
            assert agent.proc.poll() is None, "the agent died:\n" + "\n".join(agent.lines[-20:])
            doc = status(config_file)
    finally:
        code = agent.stop()
    assert code == 0
    missing = sorted(set(range(135)) - got)
    assert not missing, f"{len(missing)} accepted frames never delivered, e.g. {missing[:10]}"
    assert doc["storage"]["disk_full_since"] is None, "space is back: status no longer says full"
    assert doc["outbox"]["max_bytes"] == 268435456 and not doc["outbox"]["evicted"], doc["outbox"]
    assert not doc["storage"]["dropped_uncommitted"]
    assert doc["storage"]["disk_full_groups"] >= 1


def test_committed_backlog_survives_full_disk_and_a_start_on_a_full_disk(
    tmp_path: Path, small_disk: SmallDisk, persistent_broker: PersistentBroker, sub: DurableSubscriber
) -> None:
    config_file, udp_port = agent_config(tmp_path, small_disk, persistent_broker.port)
    device = make_device(2)
    register_abp(config_file, device)
    persistent_broker.stop_saving()  # the backhaul is down: the backlog waits in the outbox
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            frames = Sender(fwd, device)
            frames.send(300, period_s=0.003)
            time.sleep(1.0)
            small_disk.fill()
            frames.send(1)
            time.sleep(1.5)
            small_disk.fill()
            time.sleep(1.5)
            small_disk.free()
            frames.send(1)
            time.sleep(1.0)
            assert agent.stop() == 0
            # Then the disk fills while the agent is stopped, and it starts on a full disk.
            small_disk.fill()
            agent = AgentProcess(config_file)
            time.sleep(3.0)
            assert agent.proc.poll() is None, "no start on a full disk:\n" + "\n".join(agent.lines[-20:])
            persistent_broker.start()
            got = wait_delivered(sub, 302, timeout_s=40)
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        small_disk.free()
    missing = sorted(set(range(302)) - got)
    assert not missing, f"{len(missing)} committed records never delivered, e.g. {missing[:10]}"


def test_while_commits_fail_no_downlink_goes_out_and_a_stop_counts_what_never_committed(
    tmp_path: Path, small_disk: SmallDisk, persistent_broker: PersistentBroker
) -> None:
    # docs/outbox.md: while groups fail, a downlink's FCntDown would not be durable (after a crash
    # the same counter would go out again), so none is sent; a clean stop on a disk that still
    # refuses the waiting records counts them as dropped instead of losing them silently.
    config_file, udp_port = agent_config(tmp_path, small_disk, persistent_broker.port, reserve_bytes=0)
    device = make_device(3)
    register_abp(config_file, device)
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            small_disk.fill()
            frames = Sender(fwd, device)
            frames.send(5)
            deadline = time.monotonic() + 10
            while not status(config_file)["storage"]["disk_full_since"]:
                assert time.monotonic() < deadline, "the agent never met the full disk"
                time.sleep(0.2)
            confirmed = device.uplink(em310(80, 1234, False), 85, confirmed=True)
            fwd.send_frames([(confirmed, {"tmst_us": 5_000_000})])
            sent = fwd.wait_downlink(timeout_s=2.5)
            assert sent is None, "an ACK went out while its FCntDown was not durable"
            assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        small_disk.free()
    counters = agent.final_counters()
    assert counters["downlinks"].get("not_sent_disk_full", 0) >= 1
    # The 6 accepted frames never committed: counted, not silently gone.
    assert counters["outbox"].get("dropped_uncommitted.reading") == 6, counters["outbox"]

