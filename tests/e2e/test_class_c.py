"""Class C through the running agent (issue 20): a device registered with `--class C` gets a queued
downlink at once, on the RX2 parameters, without sending an uplink first; a class A device gets its
own only in the receive windows of its next uplink.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from gateway.lorawan import phy
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

DISPLAY = AbpDevice(  # edgegw/display declares classes [A, C]
    dev_eui=bytes.fromhex("70b3d57ed00000c1"),
    dev_addr=bytes.fromhex("260110c1"),
    nwk_s_key=bytes([0xC1]) * 16,
    app_s_key=bytes([0xC2]) * 16,
    profile="edgegw/display",
)
AT_ONCE_S = 2.0
"""The class C poll runs every second (gateway.app.loops.class_c)."""


def test_a_class_c_device_gets_its_downlink_at_once_and_a_class_a_one_at_its_next_uplink(
    tmp_path: Path, mosquitto: Broker, setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (class_a, _dev2) = setup
    added = cli(
        config_file, "device", "add", "--dev-eui", DISPLAY.dev_eui.hex(), "--profile", DISPLAY.profile,
        "--abp", "--dev-addr", DISPLAY.dev_addr.hex(), "--nwkskey", DISPLAY.nwk_s_key.hex(),
        "--appskey", DISPLAY.app_s_key.hex(), "--class", "C",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    platform_key = Ed25519PrivateKey.generate()
    (tmp_path / "data" / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    results = subscribe(f"edgegw/{GATEWAY_ID}/cmd-result")
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")
    topic = f"edgegw/{GATEWAY_ID}/cmd/downlink"
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
            for seq, (device, fport, payload) in enumerate(
                ((class_a, 85, "ff1001"), (DISPLAY, 20, "0102")), start=100
            ):
                params = {"dev_eui": device.dev_eui.hex(), "fport": fport, "payload_hex": payload}
                envelope = sign_envelope(
                    platform_key, command("downlink", params), target=GATEWAY_ID, seq=seq
                )
                publish.single(
                    topic, json.dumps(envelope), qos=1, hostname=mosquitto.host, port=mosquitto.port
                )
            results.wait_for(lambda m: len(m) >= 2)
            queued_at = time.monotonic()
            at_once = fwd.wait_downlink(timeout_s=AT_ONCE_S)
            waited_s = time.monotonic() - queued_at
            nothing_more = fwd.wait_downlink(timeout_s=2.5)  # the class A device has not spoken
            fwd.send_frames([(class_a.uplink(em310(90, 1000, False), 85), {"tmst_us": 2_000_000})])
            after_uplink = fwd.wait_downlink(timeout_s=5.0)
    finally:
        assert agent.stop() == 0
    answers = [json.loads(m.payload) for m in results.messages]
    assert [a["ok"] for a in answers if "state" not in a] == [True, True]  # queued, both
    # Each command's end state follows on cmd-result with its seq: both frames went on the air.
    assert {a["state"] for a in answers if "state" in a} == {"sent"}
    assert at_once is not None, f"no class C downlink within {AT_ONCE_S} s"
    assert waited_s < AT_ONCE_S
    down = phy.parse(base64.b64decode(at_once.txpk["data"]))
    assert isinstance(down, phy.DataFrame) and down.dev_addr == DISPLAY.dev_addr and down.fport == 20
    # At once (no concentrator timestamp), on the RX2 parameters: 869.525 MHz, SF12/125 kHz.
    assert at_once.txpk.get("imme") is True and "tmst" not in at_once.txpk
    assert at_once.txpk["freq"] == pytest.approx(869.525) and at_once.txpk["datr"] == "SF12BW125"
    assert nothing_more is None
    assert after_uplink is not None and after_uplink.txpk["tmst"] == 3_000_000  # RX1 of that uplink
    class_a_down = phy.parse(base64.b64decode(after_uplink.txpk["data"]))
    assert isinstance(class_a_down, phy.DataFrame) and class_a_down.dev_addr == class_a.dev_addr
