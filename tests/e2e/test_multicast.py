"""Class C multicast through the running agent (issue 20): 20 class C lamps in a group registered with
`edgegw group`, a platform `group_downlink` command or a lighting step addressed to the group ->
exactly one transmission (one PULL_RESP at the real UDP packet forwarder), which every member,
decrypting with the group keys as its firmware does (simulator.multicast), reads as the new level.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from simulator.multicast import MulticastMember
from simulator.simclock import SharedClock
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, cli, wait_ready

pytestmark = pytest.mark.e2e

LAMPS = 20
GROUP = "district-north"
PROFILE = "edgegw/lamp-controller"  # set_dim_level {level_pct} -> FPort 20, 02 <level>
FIRST_WAIT_S = 6.0
"""The class C poll runs every second; the frame waits for the commit of its McFCntDown first."""
NOTHING_MORE_S = 3.0


def register_group(config_file: Path, tmp_path: Path) -> list[MulticastMember]:
    """20 class C lamps (one CSV import), a group with generated keys, all of them members; returns the
    lamps' multicast contexts as their firmware would hold them (McAddr and keys from `group add`)."""
    rows = ["dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,class"]
    euis = []
    for n in range(LAMPS):
        eui = f"70b3d57ed00a{n:04x}"
        euis.append(eui)
        nwk, app = (bytes([n]) * 16).hex(), (bytes([0x40 + n]) * 16).hex()
        rows.append(f"{eui},{PROFILE},abp,2601a{n:03x},{nwk},{app},C")
    csv_file = tmp_path / "lamps.csv"
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    imported = cli(config_file, "device", "import", str(csv_file))
    assert imported.returncode == 0, imported.stderr
    added = cli(config_file, "group", "add", GROUP, "--json")
    assert added.returncode == 0, added.stderr
    group = json.loads(added.stdout)
    members = cli(config_file, "group", "add-member", GROUP, *euis)
    assert members.returncode == 0, members.stderr
    listed = cli(config_file, "group", "list")
    assert GROUP in listed.stdout and f" {LAMPS} " in listed.stdout, listed.stdout
    return [
        MulticastMember(
            bytes.fromhex(group["mc_addr"]),
            bytes.fromhex(group["mc_nwk_s_key"]),
            bytes.fromhex(group["mc_app_s_key"]),
        )
        for _ in range(LAMPS)
    ]


def levels_read(members: list[MulticastMember], phy_payload: bytes) -> list[int | None]:
    """What each lamp sets: the level of a set_dim (02 <level>) on FPort 20, None if it refused the frame."""
    read = []
    for member in members:
        opened = member.receive(phy_payload)
        read.append(opened[1][1] if opened is not None and opened[0] == 20 and opened[1][0] == 0x02 else None)
    return read


def test_a_group_downlink_command_is_one_transmission_that_every_lamp_obeys(
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
            params = {"group": GROUP, "command": "set_dim_level", "params": {"level_pct": 50}}
            envelope = sign_envelope(
                platform_key, command("group_downlink", params), target=GATEWAY_ID, seq=1
            )
            publish.single(
                f"edgegw/{GATEWAY_ID}/cmd/group_downlink", json.dumps(envelope), qos=1,
                hostname=mosquitto.host, port=mosquitto.port,
            )  # fmt: skip
            results.wait_for(lambda m: len(m) >= 1)
            down = fwd.wait_downlink(timeout_s=FIRST_WAIT_S)
            more = fwd.wait_downlink(timeout_s=NOTHING_MORE_S)
    finally:
        assert agent.stop() == 0
    result = json.loads(results.messages[0].payload)
    assert result["ok"] is True, result
    assert down is not None, "no multicast transmission"
    assert more is None, "more than one transmission for one group command"
    # Class C style, on the group's parameters (here the RX2 defaults): at once, 869.525 MHz SF12.
    assert down.txpk.get("imme") is True and down.txpk["freq"] == pytest.approx(869.525)
    assert down.txpk["datr"] == "SF12BW125" and down.txpk["ipol"] is True
    assert levels_read(members, base64.b64decode(down.txpk["data"])) == [50] * LAMPS
    counters = agent.final_counters()
    assert counters["downlinks"].get("multicast_sent") == 1, counters["downlinks"]


RULES = """\
schema_version: 1
location: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}
lighting:
  - id: north
    group: district-north
    command: set_dim_level
    preset: abaissement-22h-05h
"""


def test_a_lighting_step_addressed_to_the_group_is_one_frame_for_every_lamp(
    tmp_path: Path, setup: tuple[Path, int, list[AbpDevice]]
) -> None:
    config_file, udp_port, _devices = setup
    members = register_group(config_file, tmp_path)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    with config_file.open("a", encoding="utf-8") as out:
        out.write(f"rules: {{path: {rules_file}}}\n")
    # A January evening at 21:00 in Marseille: the preset says 100 % (22:00 -> 50 %). The agent reads
    # this shared clock (simulator.simclock), which it trusts: the schedule applies at once.
    evening_s = datetime(2024, 1, 15, 21, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    SharedClock(tmp_path / "clock.bin", evening_s).close()  # the agent reads the file; it stays at 21:00
    log_file = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    with log_file.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.simclock", str(tmp_path / "clock.bin"), "--",
             "run", "--config", str(config_file)],
            stderr=log, env=env,
        )  # fmt: skip
        try:
            with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
                wait_ready(fwd)
                down = fwd.wait_downlink(timeout_s=FIRST_WAIT_S + 5)
                more = fwd.wait_downlink(timeout_s=NOTHING_MORE_S)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    stderr = log_file.read_text(encoding="utf-8")
    assert proc.returncode == 0, stderr[-2000:]
    assert down is not None, f"no multicast transmission: {stderr[-2000:]}"
    assert more is None, "a lighting step to a group must be one transmission"
    assert levels_read(members, base64.b64decode(down.txpk["data"])) == [100] * LAMPS
