"""Signed platform commands through the running agent and a real broker (docs/fleet.md):
a signed `downlink` command is queued and sent at the device's next RX1; a forged one and a
replayed one are refused with their reason on `cmd-result`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, em310, wait_ready

pytestmark = pytest.mark.e2e


def test_signed_downlink_command_is_sent_and_forged_or_replayed_ones_are_refused(
    tmp_path: Path, mosquitto: Broker, setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    platform_key = Ed25519PrivateKey.generate()
    data_dir = tmp_path / "data"
    (data_dir / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    results = subscribe(f"edgegw/{GATEWAY_ID}/cmd-result")
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")
    topic = f"edgegw/{GATEWAY_ID}/cmd/downlink"
    params = {"dev_eui": dev1.dev_eui.hex(), "fport": 85, "payload_hex": "ff1001"}
    good = sign_envelope(platform_key, command("downlink", params), target=GATEWAY_ID, seq=100)
    forged = sign_envelope(
        Ed25519PrivateKey.generate(), command("downlink", params), target=GATEWAY_ID, seq=101
    )
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            # Commands are not retained: publish them once the agent is online (and subscribed).
            state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
            for count, envelope in enumerate((good, forged, good), start=1):  # the third replays the first
                publish.single(
                    topic, json.dumps(envelope), qos=1, hostname=mosquitto.host, port=mosquitto.port
                )
                results.wait_for(lambda m, n=count: len(m) >= n)
            fwd.send_frames([(dev1.uplink(em310(90, 1000, False), 85), {"tmst_us": 2_000_000})])
            resp = fwd.wait_downlink(timeout_s=5.0)
    finally:
        assert agent.stop() == 0
    # The downlink's end state follows later with its seq and a "state" (docs/fleet.md); these are
    # the answers to the envelopes themselves.
    answers = [d for d in (json.loads(m.payload) for m in results.messages) if "state" not in d]
    assert [(a["seq"], a["ok"], a["reason"]) for a in answers] == [
        (100, True, None), (101, False, "bad_signature"), (100, False, "replayed"),
    ]  # fmt: skip
    assert resp is not None and resp.txpk["tmst"] == 3_000_000  # RX1 of the next uplink
    down = phy.parse(base64.b64decode(resp.txpk["data"]))
    assert isinstance(down, phy.DataFrame) and down.fport == 85
    clear = SessionKeys(dev1.nwk_s_key, dev1.app_s_key).crypt_frm_payload(
        down.frm_payload, down.dev_addr, down.fcnt16, False, 85
    )
    assert clear == bytes.fromhex("ff1001")
