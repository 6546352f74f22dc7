"""Two real agents, one mosquitto (issue 21): a device heard by both gateways, whose home is A.

A answers its join; B, a witness, installs the session from A's join announcement (verified with
the AppKey, keys derived by itself); the device's next uplink heard by both is forwarded by both
under the same record id, and only A sends a downlink (one PULL_RESP, at A's forwarder). A forged
announcement published on the broker changes nothing at B.

The device side is built from the gateway's pure LoRaWAN functions (checked against published
vectors and lora-packet in tests/lorawan/).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan import phy
from gateway.lorawan.crypto import derive_session_keys
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker, free_port
from tests.e2e.harness import AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
DEV_EUI = bytes.fromhex("70b3d57ed00000aa")
PROFILE = "milesight/em310-udl"
GATEWAYS = {"gw-a": bytes.fromhex("b827ebfffe00000a"), "gw-b": bytes.fromhex("b827ebfffe00000b")}


def gateway_config(workdir: Path, gateway_id: str, udp_port: int, mqtt_port: int) -> Path:
    """One agent's config: its own id, UDP port and data directory; the shared broker."""
    home = workdir / gateway_id
    home.mkdir()
    config_file = home / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {gateway_id}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, tls: false}}\n"
        f"data_dir: {home / 'data'}\n"
    )
    added = cli(
        config_file, "device", "add", "--dev-eui", DEV_EUI.hex(), "--profile", PROFILE, "--otaa",
        "--join-eui", JOIN_EUI.hex(), "--appkey", APP_KEY.hex(), "--home", "gw-a",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return config_file


def wait_line(agent: AgentProcess, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in agent.lines):
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n" + "\n".join(agent.lines[-20:])
        time.sleep(0.05)


def records(sub: Any, gateway_id: str) -> list[dict[str, Any]]:
    return [r for batch in sub.json_on(f"edgegw/{gateway_id}/up") for r in batch["records"]]


def test_the_witness_takes_the_home_s_join_forwards_the_same_records_and_never_answers(
    tmp_path: Path, mosquitto: Broker, subscribe: Any
) -> None:
    ports = {gw: free_port(socket.SOCK_DGRAM) for gw in GATEWAYS}
    configs = {gw: gateway_config(tmp_path, gw, ports[gw], mosquitto.port) for gw in GATEWAYS}
    state = subscribe("edgegw/+/state")
    sub = subscribe("edgegw/+/up")
    agents = {gw: AgentProcess(configs[gw]) for gw in GATEWAYS}
    fwds: dict[str, PacketForwarder] = {}
    try:
        for gw, eui in GATEWAYS.items():
            fwds[gw] = PacketForwarder(eui, ("127.0.0.1", ports[gw]))
            wait_ready(fwds[gw])
        # Both online: each subscribed to the join announcements in its CONNACK, before this.
        online = {"edgegw/gw-a/state", "edgegw/gw-b/state"}
        state.wait_for(lambda m: {x.topic for x in m if json.loads(x.payload)["state"] == "online"} >= online)

        # The join-request heard by both gateways: only the home answers.
        request = phy.build_join_request(APP_KEY, join_eui=JOIN_EUI, dev_eui=DEV_EUI, dev_nonce=b"\x01\x02")
        for fwd in fwds.values():
            fwd.send_frames([(request, {"tmst_us": 1_000_000})])
        resp = fwds["gw-a"].wait_downlink(timeout_s=5.0)
        assert resp is not None, "the home sent no join-accept"
        accept = phy.parse(base64.b64decode(resp.txpk["data"]))
        assert isinstance(accept, phy.JoinAccept)
        payload = phy.open_join_accept(accept, APP_KEY)
        nwk, app = derive_session_keys(APP_KEY, payload.join_nonce, payload.net_id, b"\x01\x02")
        device = AbpDevice(DEV_EUI, payload.dev_addr, nwk, app, PROFILE)
        wait_line(agents["gw-b"], "installed here")  # B opened A's announcement

        # A forged announcement: the true one with one byte changed, on a gateway id nobody has.
        forged = bytearray(base64.b64decode(resp.txpk["data"]))
        forged[7] ^= 0x40
        announcement = {
            "v": 1, "dev_eui": DEV_EUI.hex(), "join_eui": JOIN_EUI.hex(), "dev_nonce": 0x0103,
            "join_accept": bytes(forged).hex(), "at": "2026-12-07T00:00:00+00:00",
        }  # fmt: skip
        state.client.publish("edgegw/gw-x/join", json.dumps(announcement), qos=1).wait_for_publish(5)

        # The device's next uplink, confirmed, heard by both: forwarded by both, answered by A only.
        uplink = device.uplink(em310(88, 1234, False), 85, confirmed=True)
        for fwd in fwds.values():
            fwd.send_frames([(uplink, {"tmst_us": 9_000_000})])
        ack = fwds["gw-a"].wait_downlink(timeout_s=5.0)
        assert ack is not None, "the home did not acknowledge the confirmed uplink"
        down = phy.parse(base64.b64decode(ack.txpk["data"]))
        assert isinstance(down, phy.DataFrame) and down.fctrl.ack and down.dev_addr == payload.dev_addr
        assert fwds["gw-a"].wait_downlink(timeout_s=1.5) is None  # exactly one
        assert fwds["gw-b"].wait_downlink(timeout_s=0.5) is None  # the witness never transmits
        sub.wait_for(lambda _m: records(sub, "gw-a") and records(sub, "gw-b"), timeout_s=15)

        # After the forged announcement B still serves the true session: a later uplink is decoded.
        wait_line(agents["gw-b"], "join announcement from gw-x refused (bad_mic)")
        later = device.uplink(em310(87, 1300, False), 85)
        fwds["gw-b"].send_frames([(later, {"tmst_us": 20_000_000})])
        sub.wait_for(lambda _m: len(records(sub, "gw-b")) >= 2, timeout_s=15)
    finally:
        for fwd in fwds.values():
            fwd.close()
        codes = {gw: agent.stop() for gw, agent in agents.items()}
    assert codes == {"gw-a": 0, "gw-b": 0}
    (at_a,) = records(sub, "gw-a")
    first_b, second_b = records(sub, "gw-b")
    assert at_a["id"] == first_b["id"] and at_a["data"] == first_b["data"] == {
        "battery": 88, "distance": 1234, "position": "normal",
    }  # fmt: skip
    assert second_b["id"].rsplit("-", 1)[0] == at_a["id"].rsplit("-", 1)[0]  # the same session
    a = agents["gw-a"].final_counters()["pipeline"]
    b = agents["gw-b"].final_counters()["pipeline"]
    assert a["joins"] == 1 and a["join_share.own"] == 1 and "witness.uplinks" not in a
    assert "joins" not in b and b["witness.join_requests"] == 1 and b["join_share.installed"] == 1
    assert b["join_share.bad_mic"] == 1 and b["witness.uplinks"] >= 1
