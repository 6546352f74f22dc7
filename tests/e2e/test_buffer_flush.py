"""`edgegw buffer flush` against a running agent: the control query answers, the backlog drains.

The agent's drain rate is set low (20 records/s) so that only the flush can empty a backlog of
frames quickly; the frames are EM310-UDL uplinks from the simulator (tests/e2e/harness.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e


def test_buffer_flush_asks_the_running_agent_to_drain_now(
    setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    config_file.write_text(config_file.read_text() + "outbox: {batch_max_records: 5}\n")
    config_file.write_text(
        config_file.read_text().replace("tls: false}", "tls: false, drain_rate_records_s: 1}")
    )
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            frames = [
                (dev.uplink(em310(90, 1000 + i, False), 85), {}) for i in range(15) for dev in (dev1, dev2)
            ]
            fwd.send_frames(frames)
            time.sleep(1.0)  # committed; at 1 record/s (burst 5) most of the 30 still wait
            before = json.loads(cli(config_file, "status", "--json").stdout)["outbox"]["depth"]

            flushed = cli(config_file, "buffer", "flush", "--json")
            waited = cli(config_file, "buffer", "flush", "--wait", "10")
            status = json.loads(cli(config_file, "status", "--json").stdout)
    finally:
        assert agent.stop() == 0

    assert before >= 15, "the drain rate did not hold the backlog back"
    assert flushed.returncode == 0, flushed.stderr
    doc = json.loads(flushed.stdout)
    assert doc["requested"] is True and doc["connected"] is True and doc["drain_rate_records_s"] == 1
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.strip() == "outbox empty"
    assert status["outbox"]["depth"] == 0
    assert status["uplink"]["forwarder"]["flushes"] == 2
