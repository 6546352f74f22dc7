"""Technician views against a running agent fed by simulated frames: status, devices, tail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e


def test_status_devices_and_tail_show_what_the_agent_heard(
    setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            tail = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--config",
                    str(config_file),
                    "tail",
                    "--json",
                    "--count",
                    "3",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)  # let tail subscribe before the frames arrive
            first = dev1.uplink(em310(77, 1500, False), 85)
            fwd.send_frames([(first, {"rssi_dbm": -101.0, "snr_db": -4.0})])
            time.sleep(0.5)  # past the de-duplication window: a second copy is a new transmission
            fwd.send_frames([(first, {})])  # a retransmission (NbTrans): tail shows the verdict
            fwd.send_frames([(dev2.uplink(em310(55, 900, True), 85), {"rssi_dbm": -88.0, "snr_db": 3.0})])
            out, _ = tail.communicate(timeout=20)
            events = [json.loads(line) for line in out.splitlines()]

            status = cli(config_file, "status", "--json")
            devices = cli(config_file, "devices", "--json")
            human = cli(config_file, "devices")
    finally:
        assert agent.stop() == 0

    assert tail.returncode == 0
    assert [e["verdict"] for e in events] == ["accepted", "retransmission", "accepted"]
    assert events[0]["dev_eui"] == dev1.dev_eui.hex() and events[0]["data"]["battery"] == 77
    assert events[1]["dev_eui"] == dev1.dev_eui.hex() and events[1]["fcnt"] == 0
    assert events[2]["data"] == {"battery": 55, "distance": 900, "position": "tilt"}

    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["gateway_id"] == "gw-test-1" and doc["uplink"]["connected"] is True
    assert doc["pipeline"]["accepted"] == 2 and doc["pipeline"]["retransmissions"] == 1
    assert doc["devices"] == {"registered": 2, "sessions": 2, "heard": 2}
    assert doc["clock"]["time_quality"] in ("ntp", "unsynced")

    rows = {d["dev_eui"]: d for d in json.loads(devices.stdout)["devices"]}
    one = rows[dev1.dev_eui.hex()]
    assert one["rssi_dbm"] == -101.0 and one["snr_db"] == -4.0 and one["battery"] == 77.0
    assert one["frames"] == 1 and one["frames_24h"] == 1 and one["last_seen_s"] > 0
    assert rows[dev2.dev_eui.hex()]["battery"] == 55.0
    assert dev1.dev_eui.hex() in human.stdout and "ago" in human.stdout


def test_views_say_when_the_agent_is_not_running(setup: tuple[Path, int, list[AbpDevice]]) -> None:
    config_file, _port, _devices = setup
    result = cli(config_file, "status")
    assert result.returncode == 1 and "not running" in result.stderr
