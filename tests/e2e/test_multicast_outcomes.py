"""A group downlink the radio refused goes again, and the platform hears how it ended (issue 20
review), through the running agent: a platform ``group_downlink`` whose first multicast frame the
real UDP packet forwarder refuses (TX_ACK ``COLLISION_PACKET``, Semtech protocol §5.5) goes again as
a new frame with the next McFCntDown, which every member reads; its end state follows on
``cmd-result`` with the command's seq (docs/fleet.md "Downlink outcomes").
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, wait_ready
from tests.e2e.test_multicast import FIRST_WAIT_S, GROUP, LAMPS, levels_read, register_group

pytestmark = pytest.mark.e2e

SEQ = 41


def test_a_refused_group_frame_goes_again_and_its_end_state_reaches_the_platform(
    tmp_path: Path, mosquitto: Broker, setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, _devices = setup
    members = register_group(config_file, tmp_path)
    platform_key = Ed25519PrivateKey.generate()
    (tmp_path / "data" / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    results = subscribe(f"edgegw/{GATEWAY_ID}/cmd-result")
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
            params = {"group": GROUP, "command": "set_dim_level", "params": {"level_pct": 30}}
            envelope = sign_envelope(
                platform_key, command("group_downlink", params), target=GATEWAY_ID, seq=SEQ
            )
            publish.single(
                f"edgegw/{GATEWAY_ID}/cmd/group_downlink", json.dumps(envelope), qos=1,
                hostname=mosquitto.host, port=mosquitto.port,
            )  # fmt: skip
            refused = fwd.wait_downlink(timeout_s=FIRST_WAIT_S, tx_ack_error="COLLISION_PACKET")
            again = fwd.wait_downlink(timeout_s=FIRST_WAIT_S)
            results.wait_for(lambda m: len(m) >= 2)
    finally:
        assert agent.stop() == 0
    assert refused is not None and again is not None, "the refused frame did not go again"
    first, second = (base64.b64decode(d.txpk["data"]) for d in (refused, again))
    # A new frame, not the same one again: the next McFCntDown (LoRaWAN 1.0.4 §4.3.1.3).
    assert struct.unpack("<H", second[6:8])[0] == struct.unpack("<H", first[6:8])[0] + 1
    assert levels_read(members, second) == [30] * LAMPS
    answer, outcome = (json.loads(m.payload) for m in results.messages[:2])
    assert answer["seq"] == SEQ and answer["ok"] is True and "state" not in answer
    assert outcome["seq"] == SEQ and outcome["cmd"] == "group_downlink"
    assert (outcome["ok"], outcome["state"], outcome["result"]["group"]) == (True, "sent", GROUP)
    counters = agent.final_counters()["downlinks"]
    assert counters.get("multicast_sent") == 1 and counters.get("multicast_not_sent.collision_packet") == 1
