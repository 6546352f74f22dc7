"""Agent updates end to end: the agent as a process under a systemd-like supervisor, a real
mosquitto, a signed ``update_agent`` and the package's chunks over MQTT (docs/fleet.md).

The packages are built here from this checkout's ``gateway`` package with another version: one
that works, and one whose uplink is broken (it dials port 1), so its health check fails and the
previous version comes back by itself. The version actually running is read from the retained
``state`` message, which every version publishes with its own ``__version__``."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway
from gateway.fleet import sign
from gateway.fleet.updates import Updates
from gateway.uplink.topics import Topics
from tests.conftest import Broker
from tests.fleet.conftest import GATEWAY_ID
from tests.fleet.supervisor import Supervisor

TOPICS = Topics("edgegw", GATEWAY_ID)
CHUNK_BYTES = 64 * 1024
CHECK_S = 4
BREAK_UPLINK = """

# Test sabotage: this version cannot reach its broker, so its health check must fail.
_original_init = MqttUplink.__init__


def _to_port_1(self, settings, **kwargs):  # type: ignore[no-untyped-def]
    import dataclasses

    _original_init(self, dataclasses.replace(settings, port=1), **kwargs)


MqttUplink.__init__ = _to_port_1  # type: ignore[method-assign]
"""


def package(version: str, *, broken: bool = False) -> bytes:
    """A wheel-like zip of this checkout's ``gateway`` package, as ``version``."""
    source = Path(gateway.__file__).parent
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(source.rglob("*")):
            if f.is_dir() or "__pycache__" in f.parts:
                continue
            name = f"gateway/{f.relative_to(source).as_posix()}"
            data = f.read_bytes()
            if name == "gateway/__init__.py":
                data = data.replace(
                    f'__version__ = "{gateway.__version__}"'.encode(), f'__version__ = "{version}"'.encode()
                )
            if broken and name == "gateway/uplink/mqtt.py":
                data += BREAK_UPLINK.encode()
            z.writestr(name, data)
        profiles = source.parent / "device_profiles"  # as a wheel carries its data files
        for f in sorted(profiles.rglob("*.yaml")):
            z.write(
                f,
                f"edgegw-{version}.data/data/share/edgegw/device_profiles/{f.relative_to(profiles).as_posix()}",
            )
    return out.getvalue()


@pytest.fixture
def supervisor(tmp_path: Path, data_dir: Path, mosquitto: Broker, free_udp_port: int) -> Iterator[Supervisor]:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{free_udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: false, reconnect_min_s: 0.2, "
        "reconnect_max_s: 0.5}\n"
        "log: {stats_interval_s: 0}\n"
        f"fleet: {{update_check_s: {CHECK_S}}}\n"
        f"data_dir: {data_dir}\n"
    )
    sup = Supervisor(config_file)
    yield sup
    if sup.agent.proc.poll() is None:
        sup.agent.proc.kill()
        sup.agent.proc.wait(10)


def send_update(broker: Broker, key: Ed25519PrivateKey, version: str, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    params = {"version": version, "sha256": sha, "size_bytes": len(data)}
    env = sign.sign_envelope(key, sign.command("update_agent", params), target=GATEWAY_ID, ttl_s=300)
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    msgs: list[Any] = [{"topic": TOPICS.cmd("update_agent"), "payload": json.dumps(env), "qos": 1}]
    msgs += [{"topic": f"{TOPICS.root}/update/{sha}/{i}/{len(chunks)}", "payload": c, "qos": 1}
             for i, c in enumerate(chunks)]  # fmt: skip
    paho.mqtt.publish.multiple(msgs, hostname=broker.host, port=broker.port)


def running(sub: Any) -> str | None:
    online = [doc["version"] for doc in sub.json_on(TOPICS.state) if doc["state"] == "online"]
    return online[-1] if online else None


def test_an_update_that_passes_its_health_check_stays_and_one_that_fails_rolls_back(
    supervisor: Supervisor, mosquitto: Broker, subscribe: Any, platform_key: Ed25519PrivateKey, data_dir: Path
) -> None:
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    supervisor.wait_until(lambda: running(sub) == gateway.__version__, 20, "the base version online")

    send_update(mosquitto, platform_key, "9.0.1", package("9.0.1"))
    supervisor.wait_until(lambda: running(sub) == "9.0.1", 40, "9.0.1 online")
    supervisor.wait_until(lambda: sub.json_on(TOPICS.update_state), 20, "an update-state")
    (applied,) = sub.json_on(TOPICS.update_state)
    assert (applied["status"], applied["version"], applied["running"]) == ("applied", "9.0.1", "9.0.1")
    assert Updates(data_dir).current() == "9.0.1" and Updates(data_dir).trial() is None
    assert supervisor.exit_codes == [75]  # one restart, into the new version

    send_update(mosquitto, platform_key, "9.0.2", package("9.0.2", broken=True))
    supervisor.wait_until(lambda: len(sub.json_on(TOPICS.update_state)) >= 2, 60, "the rollback reported")
    rolled = sub.json_on(TOPICS.update_state)[-1]
    assert (rolled["status"], rolled["version"], rolled["previous"]) == ("rolled_back", "9.0.2", "9.0.1")
    assert rolled["reason"] == f"no broker connection within {CHECK_S} s" and rolled["running"] == "9.0.1"
    assert running(sub) == "9.0.1" and Updates(data_dir).current() == "9.0.1"
    assert supervisor.exit_codes == [75, 75, 75]  # into 9.0.2, then back
    assert any("rolled back to 9.0.1" in line for line in supervisor.log())
    supervisor.stop()


def test_a_package_that_is_not_the_announced_one_is_refused(
    supervisor: Supervisor, mosquitto: Broker, subscribe: Any, platform_key: Ed25519PrivateKey, data_dir: Path
) -> None:
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    supervisor.wait_until(lambda: running(sub) == gateway.__version__, 20, "the base version online")
    good = package("9.0.3")
    sha = hashlib.sha256(good).hexdigest()
    env = sign.sign_envelope(platform_key, sign.command("update_agent", {"version": "9.0.3", "sha256": sha,
                             "size_bytes": len(good)}), target=GATEWAY_ID, ttl_s=300)  # fmt: skip
    tampered = good[:-10] + bytes(10)
    paho.mqtt.publish.multiple(
        [{"topic": TOPICS.cmd("update_agent"), "payload": json.dumps(env), "qos": 1},
         {"topic": f"{TOPICS.root}/update/{sha}/0/1", "payload": tampered, "qos": 1}],
        hostname=mosquitto.host, port=mosquitto.port,
    )  # fmt: skip
    supervisor.wait_until(lambda: sub.json_on(TOPICS.update_state), 20, "the refusal")
    (refused,) = sub.json_on(TOPICS.update_state)
    assert refused["status"] == "refused" and "not the one announced" in refused["reason"]
    # Chunks nobody announced (no signed command) are never installed.
    paho.mqtt.publish.single(
        f"{TOPICS.root}/update/{'0' * 64}/0/1", b"x", qos=1, hostname=mosquitto.host, port=mosquitto.port
    )
    time.sleep(0.5)
    assert Updates(data_dir).current() == "base" and not (data_dir / "agent" / "versions" / "9.0.3").exists()
    counters = supervisor.stop()
    update = counters["fleet"]["update"]
    assert update["refused"] == 1 and update["chunks_unannounced"] >= 1
    assert supervisor.exit_codes == []


def test_a_signed_restart_command_restarts_the_agent_gracefully(
    supervisor: Supervisor, mosquitto: Broker, subscribe: Any, platform_key: Ed25519PrivateKey
) -> None:
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    supervisor.wait_until(lambda: running(sub) == gateway.__version__, 20, "the agent online")
    env = sign.sign_envelope(platform_key, sign.command("restart", {}), target=GATEWAY_ID, ttl_s=300)
    paho.mqtt.publish.single(TOPICS.cmd("restart"), json.dumps(env), qos=1, hostname=mosquitto.host,
                             port=mosquitto.port)  # fmt: skip
    supervisor.wait_until(lambda: len(supervisor.pids) == 2, 20, "a second process")
    supervisor.wait_until(lambda: sum(d["state"] == "online" for d in sub.json_on(TOPICS.state)) >= 2, 20,
                          "online again")  # fmt: skip
    (answer,) = sub.json_on(TOPICS.cmd_result)
    assert answer["cmd"] == "restart" and answer["ok"] is True
    assert supervisor.exit_codes == [75]
    supervisor.stop()


def test_fleet_update_publish_signs_the_command_and_sends_the_chunks_the_agent_installs(
    supervisor: Supervisor, mosquitto: Broker, subscribe: Any, platform_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """`edgegw fleet update publish`, the platform's one command, against a real broker and agent:
    chunks sized to the broker's default limit (several of them), indexes from 0, as the agent joins them."""
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    supervisor.wait_until(lambda: running(sub) == gateway.__version__, 20, "the base version online")
    wheel = tmp_path / "edgegw-9.0.4-py3-none-any.whl"
    wheel.write_bytes(package("9.0.4"))
    key = tmp_path / "platform.key"
    key.write_bytes(platform_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
    published = subprocess.run(
        [sys.executable, "-m", "gateway", "fleet", "update", "publish", str(wheel), "--key", str(key),
         "--gateway", GATEWAY_ID, "--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls",
         "--wait-s", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr
    doc = json.loads(published.stdout)
    assert doc["version"] == "9.0.4" and doc["size_bytes"] == wheel.stat().st_size
    assert doc["chunks"][GATEWAY_ID] > 1  # the package is larger than one 128 KiB message
    answer = doc["answers"][GATEWAY_ID]
    assert answer["ok"] is True and answer["cmd"] == "update_agent"
    chunk_topics = [m.topic for m in sub.messages if "/update/" in m.topic]
    indexes = sorted(int(t.split("/")[-2]) for t in chunk_topics)
    assert indexes == list(range(doc["chunks"][GATEWAY_ID]))  # 0-based, every one once
    supervisor.wait_until(lambda: running(sub) == "9.0.4", 40, "9.0.4 online")
    supervisor.wait_until(lambda: sub.json_on(TOPICS.update_state), 20, "an update-state")
    (applied,) = sub.json_on(TOPICS.update_state)
    assert (applied["status"], applied["version"]) == ("applied", "9.0.4")
    supervisor.stop()
