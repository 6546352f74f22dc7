"""Operations on a running gateway that must take effect without a restart (issue 19, "Broken after
an operation"), on the real agent process and the real CLI:

- `edgegw device rekey` creates the key file and seals the registry's keys while the agent runs:
  the agent keeps serving the devices it had and serves a device added afterwards (it logged "key
  file ... missing" every 10 s and served no new device until restarted);
- `edgegw provision gateway --platform-key` pins the platform key while the agent runs: the next
  signed command is accepted (it was refused "no platform key is pinned" until a restart).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.app import SESSION_REFRESH_S
from gateway.fleet import sign
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    register_abp,
    up_records,
    wait_ready,
)
from tests.fleet.conftest import public_pem

pytestmark = pytest.mark.e2e


def test_a_rekey_while_the_agent_runs_keeps_every_device_served_and_a_new_one_too(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames([(dev1.uplink(em310(90, 1000, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 1)
            rekeyed = cli(config_file, "device", "rekey")
            assert rekeyed.returncode == 0, rekeyed.stderr
            newcomer = make_device(3)
            register_abp(config_file, newcomer)  # sealed with the new key file
            time.sleep(SESSION_REFRESH_S + 1.5)  # the agent's registry refresh
            fwd.send_frames([(dev1.uplink(em310(89, 1010, False), 85), {})])
            fwd.send_frames([(newcomer.uplink(em310(70, 1500, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 3, timeout_s=15.0)
    finally:
        assert agent.stop() == 0
    assert {r["dev_eui"] for r in up_records(sub)} == {dev1.dev_eui.hex(), newcomer.dev_eui.hex()}
    assert not [line for line in agent.lines if "key file" in line and "missing" in line]


def test_a_platform_key_pinned_while_the_agent_runs_is_trusted_at_the_next_command(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any, tmp_path: Path
) -> None:
    config_file, _udp_port, _devices = setup
    results = subscribe(f"edgegw/{GATEWAY_ID}/cmd-result")
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")
    key = Ed25519PrivateKey.generate()
    agent = AgentProcess(config_file)
    try:
        # Commands are not retained: publish once the agent is online (and subscribed).
        state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
        pub = tmp_path / "platform.pub"
        pub.write_text(public_pem(key))
        pinned = cli(config_file, "provision", "gateway", "--id", GATEWAY_ID, "--platform-key", str(pub))
        assert pinned.returncode == 0, pinned.stderr + pinned.stdout
        envelope = sign.sign_envelope(key, sign.command("flush"), target=GATEWAY_ID, seq=1)
        results.client.publish(f"edgegw/{GATEWAY_ID}/cmd/flush", json.dumps(envelope), qos=1)
        answers = results.wait_for(lambda m: len(m) >= 1, timeout_s=10.0)
    finally:
        assert agent.stop() == 0
    answer = json.loads(answers[0].payload)
    assert answer["cmd"] == "flush" and answer["ok"] is True, answer
