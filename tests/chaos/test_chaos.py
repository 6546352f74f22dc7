"""Chaos: a seeded random schedule of faults while simulated devices keep sending, checked against
the simulator's ground truth (issue 12). The CI runs a bounded schedule; the soak runs on demand:

    CHAOS_EVENTS=200 CHAOS_SEED=$RANDOM .venv/bin/pytest tests/chaos -q --timeout 0

Faults: kill -9 of the agent (then started again), a broker restart, garbage datagrams, frames with
a broken MIC, replayed frames, a clean restart, a full disk (the data directory lives on a 64 MiB
tmpfs that an outside file fills for 1-3 s, then frees), a damaged database page (kill -9, one
outbox page overwritten with random bytes, start again: the agent salvages the file; the rows of
that page are the only ones it may lose, and they are excluded from "committed"). Every part is
real: the agent process, mosquitto with persistence, UDP, SQLite, the filesystem. Asserted at the end:
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
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, em310, make_device, register_abp, wait_ready
from tests.faults.conftest import SmallDisk, mounted_tmpfs, rss_mib
from tests.faults.test_salvage import damage_outbox_page
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
FAULTS = ("kill9", "broker_restart", "garbage", "bad_mic", "replay", "restart", "disk_full", "corrupt")

pytestmark = pytest.mark.timeout(max(90, 12 * EVENTS))


class Fleet:
    """Simulated devices sending in a thread; remembers what each frame said (the ground truth)."""

    def __init__(self, fwd: PacketForwarder, devices: list[AbpDevice], rng: random.Random) -> None:
        self._fwd, self._devices, self._rng = fwd, devices, rng
        self.truth: dict[tuple[str, int], tuple[int, int]] = {}  # (dev_eui, fcnt) → (battery, distance)
        self.sent_frames: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(200_000):  # bounded: ~30 minutes at this pace
            if self._stop.is_set():
                return
            self.running.wait(10)
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


def all_committed(db_file: Path) -> list[str]:
    """The commit log of the file and of every damaged copy a salvage moved aside."""
    ids = committed_ids(db_file)
    for moved in sorted(db_file.parent.glob(f"{db_file.name}.corrupt-*")):
        if not moved.name.endswith(("-wal", "-shm")):
            ids += [i for i in committed_ids(moved) if i not in set(ids)]
    return ids


def damage_a_page(db_file: Path) -> set[str]:
    """One outbox page of the (checkpointed) file overwritten with random bytes; the ids it held."""
    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        by_seq = dict(conn.execute("SELECT seq, record_id FROM outbox"))
    conn.close()
    return {by_seq[seq] for seq in damage_outbox_page(db_file) if seq in by_seq}


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


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """The data directory's filesystem: a 64 MiB tmpfs (room for a soak's records), filled on demand."""
    with mounted_tmpfs(tmp_path / "disk", 64) as mounted:
        yield mounted


def test_random_faults_lose_no_committed_record_and_forge_none(
    tmp_path: Path, persistent_broker: PersistentBroker, disk: SmallDisk
) -> None:
    rng = random.Random(SEED)
    config_file, udp_port, data_dir = restartable_agent_config(
        tmp_path, GATEWAY_ID, persistent_broker.port, data_dir=disk.path / "data"
    )
    devices = [make_device(n) for n in range(1, 6)]
    for d in devices:
        register_abp(config_file, d)
    db_file = db.db_path(data_dir)
    install_commit_log(db_file)
    sub = DurableSubscriber(persistent_broker, f"edgegw/{GATEWAY_ID}/#", client_id="chaos-sub")
    schedule = [rng.choice(FAULTS) for _ in range(EVENTS)]
    memory: list[float] = []
    forged: list[bytes] = []
    lost: set[str] = set()  # the record ids on a damaged page: unreadable, so not owed
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
                    elif fault == "corrupt":
                        fleet.running.clear()  # no commit between the salvage and the new commit log
                        time.sleep(0.2)
                        agent.proc.kill()
                        agent.proc.wait(10)
                        lost |= damage_a_page(db_file)
                        agent = AgentProcess(config_file)
                        wait_ready(fwd)  # the salvage runs before the radio starts
                        install_commit_log(db_file)  # the fresh file has the log's table, not its trigger
                        fleet.running.set()
                    elif fault == "disk_full":
                        disk.fill()
                        time.sleep(rng.uniform(1.0, 3.0))
                        disk.free()
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
                sub.wait_ids(set(all_committed(db_file)) - lost, timeout_s=30.0)
                assert agent.stop() == 0, "\n".join(agent.lines[-20:])
            finally:
                fleet.stop()
                if agent.proc.poll() is None:  # a failed assertion above: no agent left behind
                    agent.proc.kill()
                    agent.proc.wait(10)
                    print(f"schedule {schedule}; the agent's log:\n" + "\n".join(agent.lines[-40:]))
    finally:
        sub.close()

    committed = all_committed(db_file)
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
    assert len(lost) < 100, f"a damaged page lost {len(lost)} records: more than one page holds"
    if "corrupt" in schedule:
        assert list(db_file.parent.glob(f"{db_file.name}.corrupt-*")), "a damaged page went unnoticed"
