"""Field checks against a running agent fed by simulated frames: device verify/show, radio test, diag.

The OTAA device is built from the gateway's pure LoRaWAN functions as in test_otaa_rules.py
(join-request per LoRaWAN 1.0.x §6.2.4, session keys per §6.2.5).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from gateway.lorawan import phy
from gateway.lorawan.crypto import derive_session_keys
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, make_device, wait_ready

pytestmark = pytest.mark.e2e

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
OTAA_EUI = bytes.fromhex("70b3d57ed00000aa")


def background(config_file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_subscribed(config_file: Path, count: int, timeout_s: float = 30.0) -> None:
    """Until ``count`` clients read the agent's tail stream (a CLI takes a second or more to start
    on a loaded machine: a fixed sleep raced it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = cli(config_file, "status", "--json")
        if done.returncode == 0:
            subscribers = json.loads(done.stdout).get("control", {}).get("subscribers", {})
            if subscribers.get("tail", 0) >= count:
                return
        assert time.monotonic() < deadline, f"{count} tail subscribers never came: {done.stdout[-300:]}"
        time.sleep(0.2)


def test_verify_show_radio_test_and_diag_against_the_agent(
    setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    stranger = make_device(9)  # not registered: an unknown DevAddr
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            verify = background(
                config_file, "device", "verify", dev1.dev_eui.hex(), "--timeout", "30", "--json"
            )
            radio = background(config_file, "radio", "test", "--seconds", "4", "--json")
            wait_subscribed(config_file, 2)  # both read the tail stream before the frames come
            for distance_mm in (1500, 1400, 1300):
                fwd.send_frames([(dev1.uplink(em310(80, distance_mm, False), 85), {"rssi_dbm": -90.0})])
            fwd.send_frames([(dev2.uplink(em310(60, 700, False), 85), {"rssi_dbm": -100.0, "snr_db": 1.0})])
            fwd.send_frames([(stranger.uplink(em310(1, 1, False), 85), {})])
            verified, _ = verify.communicate(timeout=30)
            heard, _ = radio.communicate(timeout=30)
            show = cli(config_file, "device", "show", dev1.dev_eui.hex(), "--value", "distance", "--json")
            human = cli(config_file, "device", "show", dev1.dev_eui.hex(), "--value", "distance")
            bundle = tmp_path / "diag.tar.gz"
            diag = cli(config_file, "diag", "--out", str(bundle))
    finally:
        assert agent.stop() == 0

    assert verify.returncode == 0, verified
    doc = json.loads(verified)
    assert doc["verdict"] == "PASS" and doc["events"][0]["data"]["distance"] == 1500

    assert radio.returncode == 0
    summary = json.loads(heard)
    assert summary["frames"] == 5 and summary["unknown_dev_addrs"] == [stranger.dev_addr.hex()]
    sources = {s["source"]: s for s in summary["sources"]}
    assert (
        sources[dev1.dev_eui.hex()]["frames"] == 3 and sources[dev1.dev_eui.hex()]["rssi_dbm"]["max"] == -90
    )
    assert sources[dev2.dev_eui.hex()]["snr_db"]["min"] == 1.0

    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert [v for _, v in shown["chart"]["points"]] == [1500, 1400, 1300]
    assert shown["device"]["dev_addr"] == dev1.dev_addr.hex() and shown["heard"]["frames"] == 3
    assert "distance, last 24 h (3 readings, min 1300 mm, max 1500 mm" in human.stdout

    assert diag.returncode == 0, diag.stderr
    with tarfile.open(bundle, "r:gz") as tar:
        files = {
            Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }
    assert json.loads(files["status.json"])["pipeline"]["accepted"] == 4
    frames = json.loads(files["recent_frames.json"])["frames"]
    assert len(frames) == 5 and frames[0]["rx"]["rssi_dbm"] == -90.0
    everything = "\n".join(files.values()).lower()
    for d in (dev1, dev2):
        assert d.nwk_s_key.hex() not in everything and d.app_s_key.hex() not in everything


def test_verify_an_otaa_device_through_its_join(setup: tuple[Path, int, list[AbpDevice]]) -> None:
    config_file, udp_port, _abp = setup
    added = cli(
        config_file, "device", "add", "--dev-eui", OTAA_EUI.hex(), "--profile", "milesight/em310-udl",
        "--otaa", "--join-eui", JOIN_EUI.hex(), "--appkey", APP_KEY.hex(),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            verify = background(config_file, "device", "verify", OTAA_EUI.hex(), "--timeout", "30")
            wait_subscribed(config_file, 1)
            nonce = bytes.fromhex("0a0b")
            request = phy.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=OTAA_EUI, dev_nonce=nonce)
            fwd.send_frames([(request, {"tmst_us": 1_000_000})])
            resp = fwd.wait_downlink(timeout_s=5.0)
            assert resp is not None, "no join-accept"
            accept = phy.parse(base64.b64decode(resp.txpk["data"]))
            assert isinstance(accept, phy.JoinAccept)
            payload = phy.open_join_accept(accept, APP_KEY)
            nwk, app = derive_session_keys(APP_KEY, payload.join_nonce, payload.net_id, nonce)
            device = AbpDevice(OTAA_EUI, payload.dev_addr, nwk, app, "milesight/em310-udl")
            fwd.send_frames([(device.uplink(em310(88, 1234, False), 85), {})])
            out, err = verify.communicate(timeout=30)
    finally:
        assert agent.stop() == 0
    assert verify.returncode == 0, out + err
    assert f"joined as DevAddr {payload.dev_addr.hex()}" in out and "distance=1234" in out
    assert "PASS" in out
