"""The pushed registry through the real parts (docs/fleet.md "Registry push"): a provisioned gateway
publishes its seal key, `edgegw fleet registry push` seals a CSV's keys to it, signs and publishes
the registry on a real mosquitto, the running agent applies it and says so on registry-state, and
decodes the pushed device's frames at once; the diff afterwards is empty; a registry signed by
another key is refused on registry-state and changes nothing. And 10,000 devices through the agent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    minimal_config,
    up_records,
    wait_ready,
)

pytestmark = pytest.mark.e2e


def fleet(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    """`edgegw fleet ...` on the platform's side: no gateway config, the broker's address."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "fleet", *args, "--host", broker.host, "--port", str(broker.port),
         "--no-tls"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def platform_key_files(directory: Path) -> tuple[Path, Path]:
    """The platform's Ed25519 signing key (PEM) and its public key, as `edgegw fleet keygen` writes them."""
    platform = Ed25519PrivateKey.generate()
    key_file, pub_file = directory / "platform.pem", directory / "platform.pub"
    key_file.write_bytes(
        platform.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub_file.write_bytes(
        platform.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_file, pub_file


def empty_csv(directory: Path) -> Path:
    path = directory / "empty.csv"
    path.write_text("dev_eui,profile,activation\n")
    return path


def test_a_registry_pushed_from_a_csv_is_applied_and_its_device_decoded(
    tmp_path: Path, mosquitto: Broker, free_udp_port: int, subscribe: Any
) -> None:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    key_file, pub_file = platform_key_files(tmp_path)
    provisioned = cli(
        config_file, "provision", "gateway", "--id", GATEWAY_ID, "--platform-key", str(pub_file), "--json"
    )
    assert provisioned.returncode == 0, provisioned.stderr
    seal_public = json.loads(provisioned.stdout)["seal_public_key"]

    device = make_device(3)
    csv_file = tmp_path / "city.csv"
    csv_file.write_text(
        "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,site,param.empty_distance_mm,param.full_distance_mm\n"
        f"{device.dev_eui.hex()},{device.profile},abp,{device.dev_addr.hex()},{device.nwk_s_key.hex()},"
        f"{device.app_s_key.hex()},quai-3,2000,300\n"
    )
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", free_udp_port)) as fwd:
            wait_ready(fwd)
            sub.wait_for(lambda _m: sub.json_on(f"edgegw/{GATEWAY_ID}/seal-key"))
            # Before the push the device is unknown here: its frame is refused.
            fwd.send_frames([(device.uplink(em310(90, 1500, False), 85), {})])

            pushed = fleet(mosquitto, "registry", "push", str(csv_file), "--target", GATEWAY_ID,
                           "--key", str(key_file), "--wait-s", "20", "--json")  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr + "\n".join(agent.lines[-20:])
            report = json.loads(pushed.stdout)
            fwd.send_frames([(device.uplink(em310(91, 1200, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 1)

            again = fleet(mosquitto, "registry", "diff", str(csv_file), "--target", GATEWAY_ID, "--json")
            assert again.returncode == 0, again.stderr

            # A registry signed by another key (version 2, removing the device) is refused, said on
            # registry-state, and changes nothing: the device is still decoded.
            (tmp_path / "forged").mkdir()
            forged_key, _ = platform_key_files(tmp_path / "forged")
            forged = fleet(mosquitto, "registry", "push", str(empty_csv(tmp_path)), "--target", GATEWAY_ID,
                           "--key", str(forged_key), "--wait-s", "10", "--json")  # fmt: skip
            assert forged.returncode == 1 and "refused by" in forged.stderr, forged.stderr
            fwd.send_frames([(device.uplink(em310(92, 900, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 2)
    finally:
        code = agent.stop()
    assert code == 0, "\n".join(agent.lines[-20:])

    assert sub.json_on(f"edgegw/{GATEWAY_ID}/seal-key")[0]["x25519"] == seal_public
    state = report["gateways"][GATEWAY_ID]["state"]
    assert (report["version"], state["version"], state["devices"], state["refused"]) == (1, 1, 1, [])
    assert report["gateways"][GATEWAY_ID]["diff"]["added"] == [device.dev_eui.hex()]
    record, after_forged = up_records(sub)  # not the frame sent before the push
    assert record["dev_eui"] == device.dev_eui.hex() and record["data"]["distance"] == 1200
    assert after_forged["data"]["distance"] == 900
    refusal = json.loads(forged.stdout)["gateways"][GATEWAY_ID]["state"]
    assert (refusal["refused_version"], refusal["reason"]) == (2, "bad_signature")
    last_state = sub.json_on(f"edgegw/{GATEWAY_ID}/registry-state")[-1]
    assert (last_state["version"], last_state["devices"]) == (1, 1)  # still the applied one
    diff = json.loads(again.stdout)["gateways"][GATEWAY_ID]
    assert (diff["held_version"], diff["added"], diff["changed"], diff["unchanged"]) == (1, [], [], 1)
    # Nothing secret in clear on the broker: the retained registry carries the keys sealed only.
    registry = sub.json_on(f"edgegw/{GATEWAY_ID}/registry")[0]
    text = json.dumps(registry)
    assert device.nwk_s_key.hex() not in text and device.app_s_key.hex() not in text


def test_10000_devices_pushed_to_a_running_agent_are_applied_within_10_s(
    tmp_path: Path, mosquitto: Broker, free_udp_port: int, subscribe: Any
) -> None:
    """The figure of issue 21 through the real agent: from the message's arrival to the stages serving
    the new registry (the agent's own log line: parse, signature, sealed keys, one transaction with the
    key store, the registry adopted by sessions, joins and rules)."""
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    key_file, pub_file = platform_key_files(tmp_path)
    assert (
        cli(
            config_file, "provision", "gateway", "--id", GATEWAY_ID, "--platform-key", str(pub_file)
        ).returncode
        == 0
    )
    assert cli(config_file, "device", "rekey").returncode == 0  # a key file: keys encrypted at rest
    lines = ["dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,join_eui,app_key"]
    for n in range(1, 10_001):
        if n % 2:
            lines.append(f"70b3d57e{n:08x},milesight/ws302,abp,27{n:06x},{n:032x},{n + 1:032x},,")
        else:
            lines.append(f"a0b3d57e{n:08x},milesight/ws302,otaa,,,,70b3d57ed0000000,{n + 7:032x}")
    csv_file = tmp_path / "fleet.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    sub = subscribe(f"edgegw/{GATEWAY_ID}/seal-key")
    agent = AgentProcess(config_file)
    try:
        sub.wait_for(lambda m: len(m) >= 1, timeout_s=20.0)
        pushed = fleet(mosquitto, "registry", "push", str(csv_file), "--target", GATEWAY_ID,
                       "--key", str(key_file), "--wait-s", "30", "--json")  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr + "\n".join(agent.lines[-20:])
    finally:
        code = agent.stop()
    assert code == 0, "\n".join(agent.lines[-20:])
    state = json.loads(pushed.stdout)["gateways"][GATEWAY_ID]["state"]
    assert (state["devices"], state["refused"]) == (10_000, [])
    (applied,) = [line for line in agent.lines if "registry version 1 applied in" in line]
    seconds = float(applied.split("applied in ")[1].split(" s")[0])
    print(f"\nthrough the agent: {applied.split('gateway.app.registry_push: ')[-1]}")
    assert seconds < 10.0
    conn = sqlite3.connect(tmp_path / "data" / "edgegw.sqlite")
    try:
        stored = conn.execute("SELECT nwk_s_key FROM sessions UNION ALL SELECT app_key FROM devices"
                              " WHERE app_key IS NOT NULL").fetchall()  # fmt: skip
    finally:
        conn.close()
    assert len(stored) == 10_000 and all(value.startswith("enc1:") for (value,) in stored)
