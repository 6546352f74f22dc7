"""End to end through the running agent: an OTAA device joins and is decoded at the broker; a rule
raises an alert on the `alert` topic; a confirmed uplink gets its ACK downlink through the forwarder.

The device side is built from the gateway's pure LoRaWAN functions, which are checked against
published vectors and the independent `lora-packet` implementation in tests/lorawan/.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan import phy
from gateway.lorawan.crypto import derive_session_keys
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, cli, em310, up_records, wait_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
OTAA_EUI = bytes.fromhex("70b3d57ed00000aa")


def join(fwd: PacketForwarder, dev_nonce: bytes) -> Any:
    request = phy.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=OTAA_EUI, dev_nonce=dev_nonce)
    fwd.send_frames([(request, {"tmst_us": 1_000_000})])
    return fwd.wait_downlink(timeout_s=5.0)


def test_otaa_join_then_uplinks_reach_the_broker_and_a_replayed_join_is_refused(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, _abp = setup
    added = cli(
        config_file, "device", "add", "--dev-eui", OTAA_EUI.hex(), "--profile", "milesight/em310-udl",
        "--otaa", "--join-eui", JOIN_EUI.hex(), "--appkey", APP_KEY.hex(),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            resp = join(fwd, bytes.fromhex("0102"))
            assert resp is not None, "no join-accept was sent to the packet forwarder"
            txpk = resp.txpk
            # Class A join-accept: RX1, 5 s after the join-request on the concentrator clock.
            assert txpk["tmst"] == 6_000_000 and txpk["ipol"] is True
            accept = phy.parse(base64.b64decode(txpk["data"]))
            assert isinstance(accept, phy.JoinAccept)
            payload = phy.open_join_accept(accept, APP_KEY)
            nwk, app = derive_session_keys(APP_KEY, payload.join_nonce, payload.net_id, bytes.fromhex("0102"))
            device = AbpDevice(OTAA_EUI, payload.dev_addr, nwk, app, "milesight/em310-udl")
            fwd.send_frames([(device.uplink(em310(88, 1234, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 1)
            time.sleep(0.5)  # past the de-duplication window
            assert join(fwd, bytes.fromhex("0102")) is None  # replayed join: no join-accept
    finally:
        assert agent.stop() == 0
    (record,) = up_records(sub)
    assert record["dev_eui"] == OTAA_EUI.hex() and record["data"] == {
        "battery": 88, "distance": 1234, "position": "normal",
    }  # fmt: skip
    counters = agent.final_counters()["pipeline"]
    # The replay came 0.5 s after the join: refused before any crypto by the per-device join interval
    # (gateway.lorawan.join.JOIN_MIN_INTERVAL_S); a later one is refused by its used DevNonce.
    assert counters["joins"] == 1 and counters["rejected.join_rate_limited"] == 1


def test_a_rule_raises_an_alert_on_the_alert_topic(
    tmp_path: Path,
    mosquitto: Broker,
    free_udp_port: int,
    setup: tuple[Path, int, list[AbpDevice]],
    subscribe: Any,
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    rules = tmp_path / "rules.yaml"
    shutil.copy(ROOT / "rules" / "examples" / "waste.yaml", rules)
    with config_file.open("a") as f:
        f.write(f"rules: {{path: {rules}}}\n")
    sub = subscribe(f"edgegw/{GATEWAY_ID}/alert")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames([(dev1.uplink(em310(90, 1800, True), 85), {})])  # tilted: emptying or vandalism
            alerts = sub.wait_for(lambda m: len(m) >= 1)
    finally:
        assert agent.stop() == 0
    alert = json.loads(alerts[0].payload)
    assert "container-tilted" in json.dumps(alert) and dev1.dev_eui.hex() in json.dumps(alert)


def test_a_confirmed_uplink_is_acknowledged_by_a_downlink(setup: tuple[Path, int, list[AbpDevice]]) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames(
                [(dev1.uplink(em310(90, 1800, False), 85, confirmed=True), {"tmst_us": 5_000_000})]
            )
            resp = fwd.wait_downlink(timeout_s=5.0)
    finally:
        assert agent.stop() == 0
    assert resp is not None, "no ACK downlink"
    down = phy.parse(base64.b64decode(resp.txpk["data"]))
    assert isinstance(down, phy.DataFrame) and not down.uplink and down.fctrl.ack
    assert down.dev_addr == dev1.dev_addr and resp.txpk["tmst"] == 6_000_000  # RX1, 1 s later
