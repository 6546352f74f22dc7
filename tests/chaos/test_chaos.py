"""Chaos: a seeded random schedule of faults while simulated devices keep sending, checked against
the simulator's ground truth (issue 12). The CI runs a bounded schedule; the soak runs on demand:

    CHAOS_EVENTS=200 CHAOS_SEED=$RANDOM .venv/bin/pytest tests/chaos -q --timeout 0

Faults: kill -9 of the agent (then started again), a broker restart, garbage datagrams, frames with
a broken MIC, replayed frames, a clean restart. Every part is real: the agent process, mosquitto
with persistence, UDP, SQLite. Asserted at the end:
* every record the outbox committed reached the broker (ids logged by an SQLite trigger in the
  inserting transaction), and nothing the outbox never committed did;
* a duplicate is the same record again (same id, same body): the platform can drop it;
* every reading says what the device really sent (the truth: DevEUI + FCnt → distance, battery);
  no garbage, broken-MIC or replayed frame became a record of its own;
* the agent always came back (it answered PULL_DATA after every start) and its memory stayed
  bounded across the run (resident size sampled after each fault).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, em310, make_device, register_abp, wait_ready
from tests.reliability.conftest import (
    DurableSubscriber,
    PersistentBroker,
    committed_ids,
    install_commit_log,
    integrity,
    restartable_agent_config,
)

EVENTS = int(os.environ.get("CHAOS_EVENTS", "8"))
SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
GATEWAY_ID = "gw-chaos"
FAULTS = ("kill9", "broker_restart", "garbage", "bad_mic", "replay", "restart")

pytestmark = pytest.mark.timeout(max(90, 12 * EVENTS))


class Fleet:
    """Simulated devices sending in a thread; remembers what each frame said (the ground truth)."""

    def __init__(self, fwd: PacketForwarder, devices: list[AbpDevice], rng: random.Random) -> None:
        self._fwd, self._devices, self._rng = fwd, devices, rng
        self.truth: dict[tuple[str, int], tuple[int, int]] = {}  # (dev_eui, fcnt) → (battery, distance)
        self.sent_frames: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(200_000):  # bounded: ~30 minutes at this pace
            if self._stop.is_set():
                return
            frames = []
            with self._lock:
                for d in self._devices:
                    battery, distance = self._rng.randint(1, 100), self._rng.randint(200, 4000)
                    self.truth[(d.dev_eui.hex(), d.fcnt_up)] = (battery, distance)
                    frame = d.uplink(em310(battery, distance, False), 85)
                    self.sent_frames.append(frame)
                    frames.append((frame, {}))
            try:
                self._fwd.send_frames(frames)
            except OSError:
                pass
            self._stop.wait(0.02)

    def earlier_frames(self, n: int) -> list[bytes]:
        with self._lock:
            return self._rng.sample(self.sent_frames, min(n, len(self.sent_frames)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def garbage(udp_port: int, rng: random.Random, n: int = 50) -> None:
    """Random datagrams, half of them shaped like PUSH_DATA with a broken JSON or PHYPayload."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(n):
            if i % 2:
                body = json.dumps(
                    {"rxpk": [{"data": rng.randbytes(rng.randint(0, 40)).hex(), "freq": 868.1}]}
                )
                data = (
                    bytes([2])
                    + rng.randbytes(2)
                    + bytes([0])
                    + GATEWAY_EUI
                    + body.encode()[: rng.randint(0, 200)]
                )
            else:
                data = rng.randbytes(rng.randint(0, 300))
            sock.sendto(data, ("127.0.0.1", udp_port))


def test_random_faults_lose_no_committed_record_and_forge_none(
    tmp_path: Path, persistent_broker: PersistentBroker
) -> None:
    rng = random.Random(SEED)
    config_file, udp_port, data_dir = restartable_agent_config(tmp_path, GATEWAY_ID, persistent_broker.port)
    devices = [make_device(n) for n in range(1, 6)]
    for d in devices:
        register_abp(config_file, d)
    db_file = db.db_path(data_dir)
    install_commit_log(db_file)
    sub = DurableSubscriber(persistent_broker, f"edgegw/{GATEWAY_ID}/#", client_id="chaos-sub")
    schedule = [rng.choice(FAULTS) for _ in range(EVENTS)]
    memory: list[float] = []
    forged: list[bytes] = []
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            agent = AgentProcess(config_file)
            wait_ready(fwd)
            fleet = Fleet(fwd, devices, rng)
            try:
                for fault in schedule:
                    time.sleep(rng.uniform(0.3, 0.8))
                    if fault == "kill9":
                        agent.proc.kill()  # SIGKILL: no shutdown code runs
                        agent.proc.wait(10)
                        assert integrity(db_file) == "ok", f"database damaged after a kill ({schedule})"
                        agent = AgentProcess(config_file)
                        wait_ready(fwd)  # it comes back
                    elif fault == "restart":
                        assert agent.stop() == 0, "\n".join(agent.lines[-20:])
                        agent = AgentProcess(config_file)
                        wait_ready(fwd)
                    elif fault == "broker_restart":
                        persistent_broker.restart()
                    elif fault == "garbage":
                        garbage(udp_port, rng)
                    elif fault == "bad_mic":
                        for frame in fleet.earlier_frames(10):
                            broken = frame[:-1] + bytes([frame[-1] ^ 0x5A])
                            forged.append(broken)
                            fwd.send_frames([(broken, {})])
                    else:  # replay
                        fwd.send_frames([(frame, {}) for frame in fleet.earlier_frames(10)])
                    memory.append(rss_mib(agent.proc.pid))
                # Broker up, traffic stopped: everything committed drains; a clean stop ends the run.
                fleet.stop()
                sub.wait_ids(set(committed_ids(db_file)), timeout_s=30.0)
                assert agent.stop() == 0, "\n".join(agent.lines[-20:])
            finally:
                fleet.stop()
                if agent.proc.poll() is None:  # a failed assertion above: no agent left behind
                    agent.proc.kill()
                    agent.proc.wait(10)
                    print(f"schedule {schedule}; the agent's log:\n" + "\n".join(agent.lines[-40:]))
    finally:
        sub.close()

    committed = committed_ids(db_file)
    assert len(committed) > 100, f"too little traffic to mean anything ({schedule})"
    assert len(set(committed)) == len(committed), "an id was committed twice"
    received = sub.snapshot()
    assert set(received) <= set(committed), "the broker got a record the outbox never committed"
    by_id: dict[str, dict[str, Any]] = {}
    for record in sub.records:
        first = by_id.setdefault(record["id"], record)
        assert record == first, f"duplicate id {record['id']} with another body"
    readings = [r for r in by_id.values() if r["kind"] == "reading"]
    assert len(readings) == len(by_id), (
        f"records that are not readings: {set(by_id) - {r['id'] for r in readings}}"
    )
    for r in readings:
        truth = fleet.truth.get((r["dev_eui"], r["fcnt"]))
        assert truth is not None, f"a record no device sent: {r['id']}"
        assert (r["data"]["battery"], r["data"]["distance"]) == truth, r
    assert not {r["raw"] for r in readings} & {f.hex() for f in forged}
    duplicates = Counter(received) - Counter(set(received))
    assert sum(duplicates.values()) <= len(committed)
    # Bounded memory: after the first fault, the agent's size does not keep growing with faults.
    assert max(memory) < memory[0] + 30, f"resident MiB after each fault: {memory}"
    assert integrity(db_file) == "ok"
