"""Counts that tell the truth, and what the agent knows survives a restart (issue 19), on the real
agent process: the registry's devices counted whether they joined or not, NbTrans repeats counted
apart from replays, and `edgegw devices` / `device show` unchanged by a SIGTERM or a kill -9.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.inventory_state import WRITE_INTERVAL_S
from gateway.messages import MType
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, cli, em310, up_records, wait_ready

pytestmark = pytest.mark.e2e

DEDUP_PAST_S = 0.4
"""Past the 200 ms cross-gateway de-duplication window: a copy sent later is a new transmission."""


def devices_json(config_file: Path) -> dict[str, dict[str, Any]]:
    done = cli(config_file, "devices", "--json")
    assert done.returncode == 0, done.stderr
    return {d["dev_eui"]: d for d in json.loads(done.stdout)["devices"]}


def test_registered_counts_every_device_and_a_retransmission_is_not_a_replay(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    otaa = cli(
        config_file, "device", "add", "--dev-eui", "70b3d57ed00000a1", "--profile", "milesight/em310-udl",
        "--otaa", "--join-eui", "70b3d57ed0000000", "--appkey", "00" * 16,
    )  # fmt: skip
    assert otaa.returncode == 0, otaa.stderr
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            first = dev1.uplink(em310(90, 1000, False), 85)
            for _ in range(3):  # NbTrans 3: the same uplink three times
                fwd.send_frames([(first, {})])
                time.sleep(DEDUP_PAST_S)
            fwd.send_frames([(dev1.uplink(em310(90, 1010, False), 85), {})])
            time.sleep(DEDUP_PAST_S)
            fwd.send_frames([(first, {})])  # an older frame once a newer one was accepted: a replay
            sub.wait_for(lambda _m: len(up_records(sub)) >= 2)
            time.sleep(0.5)
            status = cli(config_file, "status", "--json")
            row = devices_json(config_file)[dev1.dev_eui.hex()]
    finally:
        assert agent.stop() == 0
    assert status.returncode == 0, status.stderr
    # Three devices registered (the OTAA one has not joined), two with a session, one heard.
    assert json.loads(status.stdout)["devices"] == {"registered": 3, "sessions": 2, "heard": 1}
    assert [r["fcnt"] for r in up_records(sub)] == [0, 1]
    pipeline = agent.final_counters()["pipeline"]
    assert pipeline["retransmissions"] == 2 and pipeline["rejected.replayed_fcnt"] == 1
    assert pipeline["accepted"] == 2
    assert row["frames"] == 2 and row["retransmissions"] == 2 and row["errors"] == 0
    assert not [line for line in agent.lines if "ERROR" in line]


def send_and_wait(config_file: Path, udp_port: int, dev: AbpDevice, sub: Any, n: int, wait_s: float) -> None:
    with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
        wait_ready(fwd)
        before = len(up_records(sub))
        for i in range(n):
            fwd.send_frames([(dev.uplink(em310(70 + i, 1200 + i, False), 85), {"rssi_dbm": -101.0 - i})])
            time.sleep(0.3)  # each in its own group commit: the later ones within the write interval
        sub.wait_for(lambda _m: len(up_records(sub)) >= before + n)
        time.sleep(wait_s)


def test_last_seen_counts_and_readings_survive_a_restart(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    agent = AgentProcess(config_file)
    try:
        send_and_wait(config_file, udp_port, dev1, sub, 3, 0.2)
        before = devices_json(config_file)[dev1.dev_eui.hex()]
    finally:
        assert agent.stop() == 0  # SIGTERM right after the frames: the last group carries them
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
        after = devices_json(config_file)[dev1.dev_eui.hex()]
        shown = cli(config_file, "device", "show", dev1.dev_eui.hex(), "--json")
    finally:
        assert agent.stop() == 0
    assert before["frames"] == 3 and before["last_seen_s"] is not None
    for key in ("last_seen_s", "rssi_dbm", "snr_db", "fcnt", "battery", "frames", "frames_24h", "errors"):
        assert after[key] == before[key], key
    assert shown.returncode == 0, shown.stderr
    assert [r["data"]["battery"] for r in json.loads(shown.stdout)["readings"]] == [70, 71, 72]


def test_after_a_kill_9_what_was_committed_is_shown(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    agent = AgentProcess(config_file)
    try:
        send_and_wait(config_file, udp_port, dev1, sub, 2, WRITE_INTERVAL_S + 1.0)  # the timer's group
        before = devices_json(config_file)[dev1.dev_eui.hex()]
    finally:
        agent.proc.kill()  # SIGKILL: no shutdown code runs
        agent.proc.wait(10)
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
        after = devices_json(config_file)[dev1.dev_eui.hex()]
    finally:
        assert agent.stop() == 0
    assert after["frames"] == before["frames"] == 2
    assert after["last_seen_s"] == before["last_seen_s"] and after["rssi_dbm"] == -102.0


def _ack_fcnt_down(resp: Any) -> int:
    """The FCntDown of an ACK downlink in a PULL_RESP (FCtrl's ACK bit set, else the test fails)."""
    phy_payload = base64.b64decode(resp.txpk["data"])
    assert phy_payload[0] >> 5 == MType.UNCONFIRMED_DATA_DOWN and phy_payload[5] & 0x20, phy_payload.hex()
    return int.from_bytes(phy_payload[6:8], "little")


def test_a_confirmed_uplink_repeated_because_its_ack_was_lost_is_acknowledged_again(
    setup: tuple[Path, int, list[AbpDevice]],
) -> None:
    # The device sent a confirmed uplink; our ACK did not reach it, so it sends the same frame again
    # (same FCnt, same MIC). A network server acknowledges the repeat (issue 20): before, the repeat
    # was refused as a replay and the device never got its ACK.
    config_file, udp_port, (dev1, _dev2) = setup
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            confirmed = dev1.uplink(em310(90, 1000, False), 85, confirmed=True)
            fwd.send_frames([(confirmed, {"tmst_us": 1_000_000})])
            first = fwd.wait_downlink(timeout_s=5.0)
            time.sleep(DEDUP_PAST_S)
            fwd.send_frames([(confirmed, {"tmst_us": 9_000_000})])
            again = fwd.wait_downlink(timeout_s=5.0)
    finally:
        assert agent.stop() == 0
    assert first is not None and again is not None, "each copy of the confirmed uplink gets its ACK"
    assert [_ack_fcnt_down(first), _ack_fcnt_down(again)] == [0, 1]  # two downlinks, two counters
    pipeline = agent.final_counters()["pipeline"]
    assert pipeline["accepted"] == 1 and pipeline["retransmissions"] == 1
    assert pipeline["retransmissions.acked_again"] == 1 and "rejected.replayed_fcnt" not in pipeline
