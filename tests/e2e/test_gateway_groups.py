"""Gateway groups through running agents and a real mosquitto (issue 21, docs/fleet.md "Gateway groups").

Two agents on one broker: ``gw-north`` with ``fleet.groups: north``, ``gw-south`` without. A command
signed for ``group:north`` and published by the platform's tool (`edgegw fleet send`, one copy per
gateway named) runs on ``gw-north`` and is refused ``misaddressed`` by ``gw-south``. Then ``gw-south``
joins the group by a pushed configuration (its local file lets a push set ``fleet.groups``) and runs
the next command for ``group:north`` after the restart that applies it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet import sign
from gateway.fleet.remote_config import EXIT_RESTART
from gateway.provisioning.gateway_setup import pin_platform_key
from gateway.uplink.topics import Topics
from tests.conftest import Broker, free_port
from tests.e2e.harness import AgentProcess
from tests.fleet.supervisor import Supervisor

pytestmark = pytest.mark.e2e

NORTH, SOUTH = "gw-north", "gw-south"


def edgegw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key_file(tmp_path: Path, platform_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "platform.key"
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    path.write_bytes(platform_key.private_bytes(*pem))
    pub = tmp_path / "platform.pub"
    pub.write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def gateway_config(tmp_path: Path, gateway_id: str, mosquitto: Broker, fleet: str) -> Path:
    """A gateway's own config file and data dir, the platform key pinned as `provision gateway` does."""
    workdir = tmp_path / gateway_id
    data = workdir / "data"
    data.mkdir(parents=True)
    pin_platform_key(data, tmp_path / "platform.pub")
    config_file = workdir / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {gateway_id}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: false, reconnect_min_s: 0.2,"
        " reconnect_max_s: 0.5}\n"
        "log: {stats_interval_s: 0}\n"
        f"fleet: {fleet}\n"
        f"data_dir: {data}\n"
    )
    return config_file


def signed_flush(tmp_path: Path, key_file: Path, name: str) -> Path:
    """A `flush` for group:north, its seq the signer's default (microseconds now: above any before)."""
    doc = tmp_path / "flush.json"
    doc.write_text('{"cmd": "flush"}')
    out = edgegw("fleet", "sign", str(doc), "--key", str(key_file), "--target", "group:north")
    assert out.returncode == 0, out.stderr
    env = tmp_path / f"env-{name}.json"
    env.write_text(out.stdout)
    return env


def send(env: Path, mosquitto: Broker, *gateways: str) -> tuple[int, dict[str, Any]]:
    named = [arg for gw in gateways for arg in ("--gateway", gw)]
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls"]
    out = edgegw("fleet", "send", str(env), *broker, *named, "--wait-s", "20")
    answers: dict[str, Any] = json.loads(out.stdout)["answers"]
    return out.returncode, answers


@pytest.fixture
def agents(tmp_path: Path, mosquitto: Broker, key_file: Path, subscribe: Any) -> Iterator[dict[str, Any]]:
    online = subscribe("edgegw/+/state")
    north = AgentProcess(gateway_config(tmp_path, NORTH, mosquitto, '{groups: "north lighting"}'))
    # gw-south's file lets the platform set its groups (fleet.* is local-only otherwise).
    south = Supervisor(gateway_config(tmp_path, SOUTH, mosquitto, '{remote_settable: "fleet.groups"}'))
    try:
        south.wait_until(
            lambda: (
                {m.topic.split("/")[1] for m in online.messages if b'"online"' in m.payload} >= {NORTH, SOUTH}
            ),
            30,
            "both gateways online",
        )
        yield {"north": north, "south": south, "online": online}
    finally:
        assert north.stop() == 0
        if south.agent.proc.poll() is None:
            south.stop()


def test_a_command_to_a_group_runs_on_its_members_and_is_misaddressed_elsewhere(
    tmp_path: Path, mosquitto: Broker, key_file: Path, agents: dict[str, Any]
) -> None:
    code, answers = send(signed_flush(tmp_path, key_file, "first"), mosquitto, NORTH, SOUTH)
    assert code == 1  # one gateway refused
    assert (answers[NORTH]["ok"], answers[NORTH]["reason"]) == (True, None)
    assert (answers[SOUTH]["ok"], answers[SOUTH]["reason"]) == (False, "misaddressed")


def test_a_pushed_configuration_puts_a_gateway_in_a_group(
    tmp_path: Path, mosquitto: Broker, key_file: Path, platform_key: Ed25519PrivateKey, agents: dict[str, Any]
) -> None:
    south: Supervisor = agents["south"]
    code, answers = send(signed_flush(tmp_path, key_file, "before"), mosquitto, SOUTH)
    assert code == 1 and answers[SOUTH]["reason"] == "misaddressed"
    payload = {"config": {"version": "groups-1", "settings": {"fleet": {"groups": "north"}}, "rules": None}}
    env = sign.sign_envelope(platform_key, payload, target=SOUTH, ttl_s=3600)
    paho.mqtt.publish.single(
        Topics("edgegw", SOUTH).config, json.dumps(env), qos=1, retain=True,
        hostname=mosquitto.host, port=mosquitto.port,
    )  # fmt: skip
    # Applied with one restart (the systemd unit's job, done here by the supervisor).
    south.wait_until(lambda: south.exit_codes == [EXIT_RESTART], 30, "the restart that applies the push")
    # Commands are not retained: send once the new process is online (and so subscribed).
    online = agents["online"]
    south.wait_until(
        lambda: (
            sum(m.topic == f"edgegw/{SOUTH}/state" and b'"online"' in m.payload for m in online.messages) >= 2
        ),
        30,
        "the new process online",
    )
    code, answers = send(signed_flush(tmp_path, key_file, "after"), mosquitto, SOUTH)
    assert (code, answers[SOUTH]["ok"]) == (0, True), answers
