"""kill -9 of the agent, repeatedly, while a simulated packet forwarder sends frames and the broker
restarts: every record the outbox committed reaches the broker, duplicates only with the same id,
and the database file passes ``PRAGMA integrity_check`` after every kill.

This is ARCHITECTURE.md §3.3 ("from then on it is delivered at least once, across kill -9 ...").
The committed ids are logged by an SQLite trigger in the inserting transaction (see conftest),
so the test needs no hook in the agent. The agent is the real `python -m gateway run`.
Frames come from simulator.devices (ABP, EM310-UDL payloads as in tests/e2e).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway import db
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

pytestmark = pytest.mark.timeout(60)

GATEWAY_ID = "gw-kill"


class Traffic:
    """Sends one datagram of frames (one per device) every ``period_s`` in a thread."""

    def __init__(self, fwd: PacketForwarder, devices: list, period_s: float = 0.01) -> None:  # type: ignore[type-arg]
        self._fwd, self._devices, self._period_s = fwd, devices, period_s
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < 100_000:
            n += 1
            frames = [(d.uplink(em310(90, n % 4000, False), 85), {}) for d in self._devices]
            try:
                self._fwd.send_frames(frames)
            except OSError:
                pass
            self.sent += len(frames)
            self._stop.wait(self._period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_kill9_and_broker_restarts_lose_no_committed_record(
    tmp_path: Path, persistent_broker: PersistentBroker
) -> None:
    config_file, udp_port, data_dir = restartable_agent_config(tmp_path, GATEWAY_ID, persistent_broker.port)
    devices = [make_device(n) for n in range(1, 5)]
    for d in devices:
        register_abp(config_file, d)
    db_file = db.db_path(data_dir)
    install_commit_log(db_file)
    sub = DurableSubscriber(persistent_broker, f"edgegw/{GATEWAY_ID}/#")
    rng = random.Random(7)
    kills = 0
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            for cycle in range(5):
                agent = AgentProcess(config_file)
                try:
                    wait_ready(fwd)
                    traffic = Traffic(fwd, devices)
                    time.sleep(rng.uniform(0.4, 1.0))
                    if cycle in (1, 3):
                        persistent_broker.restart()  # while the agent is publishing
                        time.sleep(rng.uniform(0.2, 0.6))
                finally:
                    agent.proc.kill()  # SIGKILL: no shutdown code runs
                    agent.proc.wait(10)
                    kills += 1
                    traffic.stop()
                assert integrity(db_file) == "ok", f"database damaged after kill {kills}"

            # A last run with the broker up drains everything; a clean stop ends it.
            agent = AgentProcess(config_file)
            try:
                wait_ready(fwd)
                committed = committed_ids(db_file)
                got = sub.wait_ids(set(committed), timeout_s=20.0)
            finally:
                assert agent.stop() == 0, "\n".join(agent.lines[-20:])
    finally:
        sub.close()

    committed = committed_ids(db_file)
    assert len(committed) > 200, "the test sent too little traffic to mean anything"
    assert len(set(committed)) == len(committed), "an id was committed twice"
    received = sub.snapshot()
    assert set(received) <= set(committed), "the broker got a record the outbox never committed"
    assert set(committed) <= got
    duplicates = Counter(received) - Counter(set(received))
    # Duplicates are allowed (a kill between PUBACK and delete), but only as the same id.
    assert sum(duplicates.values()) <= len(committed)
    assert integrity(db_file) == "ok"
