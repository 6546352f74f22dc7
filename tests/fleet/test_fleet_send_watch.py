"""``edgegw fleet send`` and ``watch`` against a running agent and a real mosquitto: the platform's
tool signs, publishes, pairs each gateway's answer with the envelope, and follows what gateways
report. The agent is a process with the platform key pinned (tests/fleet/conftest.py)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import Broker
from tests.e2e.harness import AgentProcess
from tests.fleet.conftest import GATEWAY_ID


def edgegw(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def agent(tmp_path: Path, data_dir: Path, mosquitto: Broker, free_udp_port: int) -> Iterator[AgentProcess]:
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{free_udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: false, health_interval_s: 0.5}}\n"
        "log: {stats_interval_s: 0}\n"
        f"data_dir: {data_dir}\n"
    )
    proc = AgentProcess(config_file)
    deadline = time.monotonic() + 20
    while not any("MQTT connected" in line for line in proc.lines):
        assert time.monotonic() < deadline and proc.proc.poll() is None, "\n".join(proc.lines[-20:])
        time.sleep(0.05)
    yield proc
    assert proc.stop() == 0


@pytest.fixture
def key_file(tmp_path: Path, platform_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "platform.key"
    path.write_bytes(
        platform_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def signed_file(tmp_path: Path, key_file: Path, command: dict[str, object], seq: int) -> Path:
    doc = tmp_path / f"cmd-{seq}.json"
    doc.write_text(json.dumps(command))
    signed = edgegw(
        "fleet", "sign", str(doc), "--key", str(key_file), "--target", GATEWAY_ID, "--seq", str(seq)
    )
    assert signed.returncode == 0, signed.stderr
    out = tmp_path / f"env-{seq}.json"
    out.write_text(signed.stdout)
    return out


def test_send_publishes_and_pairs_the_answer_with_the_envelope(
    tmp_path: Path, key_file: Path, mosquitto: Broker, agent: AgentProcess
) -> None:
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls"]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gateway", "fleet", "watch", *broker, "--seconds", "30", "--count", "6"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ok = edgegw("fleet", "send", str(signed_file(tmp_path, key_file, {"cmd": "flush"}, 7)), *broker,
                    "--wait-s", "20")  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        answer = json.loads(ok.stdout)["answers"][GATEWAY_ID]
        assert answer["cmd"] == "flush" and answer["seq"] == 7 and answer["ok"] is True
        # The same seq again is a replay: the gateway refuses it, and send says so (exit 1).
        again = edgegw("fleet", "send", str(tmp_path / "env-7.json"), *broker, "--wait-s", "20")
        assert again.returncode == 1 and "refused" in again.stderr, again.stdout + again.stderr
        assert json.loads(again.stdout)["answers"][GATEWAY_ID]["reason"] == "replayed"
        out, _ = watcher.communicate(timeout=40)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 6 and {line["gateway"] for line in lines} == {GATEWAY_ID}
    kinds = {line["kind"] for line in lines}
    assert "health" in kinds  # every 0.5 s here
    assert {"cmd-result", "state"} & kinds  # the answers, or the retained online state first


def test_send_to_a_silent_gateway_fails_after_the_wait(
    tmp_path: Path, key_file: Path, mosquitto: Broker
) -> None:
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls"]
    env = signed_file(tmp_path, key_file, {"cmd": "flush"}, 1)
    silent = edgegw("fleet", "send", str(env), *broker, "--wait-s", "1")
    assert silent.returncode == 1 and f"no answer within 1 s from {GATEWAY_ID}" in silent.stderr


def test_send_refuses_what_is_not_an_envelope_and_a_group_without_gateways(
    tmp_path: Path, key_file: Path, platform_key: Ed25519PrivateKey
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cmd": "flush"}')
    assert edgegw("fleet", "send", str(bad), "--wait-s", "1").returncode == 2
    doc = tmp_path / "cmd.json"
    doc.write_text('{"cmd": "flush"}')
    signed = edgegw("fleet", "sign", str(doc), "--key", str(key_file), "--target", "group:north")
    env = tmp_path / "group.json"
    env.write_text(signed.stdout)
    refused = edgegw("fleet", "send", str(env), "--wait-s", "1")
    assert refused.returncode == 2 and "--gateway" in refused.stderr


def test_health_says_the_config_in_effect_and_counts_refused_commands(
    tmp_path: Path, mosquitto: Broker, agent: AgentProcess, subscribe: Any
) -> None:
    """docs/fleet.md promises the refusals by reason in `health`; a forged command must show there."""
    sub = subscribe(f"edgegw/{GATEWAY_ID}/health")
    forger = tmp_path / "forger.key"
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    forger.write_bytes(Ed25519PrivateKey.generate().private_bytes(*pem))
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls"]
    forged = edgegw("fleet", "send", str(signed_file(tmp_path, forger, {"cmd": "flush"}, 3)), *broker,
                    "--wait-s", "20")  # fmt: skip
    assert (
        forged.returncode == 1
        and json.loads(forged.stdout)["answers"][GATEWAY_ID]["reason"] == "bad_signature"
    )

    def counted(msgs: list[Any]) -> bool:
        docs = [json.loads(m.payload) for m in msgs]
        return any(d.get("fleet", {}).get("rejected_bad_signature") == 1 for d in docs)

    sub.wait_for(counted, timeout_s=20)
    health = json.loads(sub.messages[-1].payload)
    schema = json.loads((resources.files("gateway") / "schemas" / "health-v1.json").read_text())
    jsonschema.validate(health, schema)
    assert health["agent"]["config_version"] is None  # no configuration pushed: the local file alone
    assert health["fleet"]["rejected_bad_signature"] == 1 and "accepted" not in health["fleet"]
    assert {"config", "update"} <= set(health["fleet"])


def test_watch_on_a_terminal_prints_one_readable_line_per_message(
    mosquitto: Broker, agent: AgentProcess
) -> None:
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls"]
    main_fd, tty_fd = pty.openpty()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gateway", "fleet", "watch", *broker, "--seconds", "20", "--count", "3"],
        stdout=tty_fd, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(tty_fd)
    try:
        assert watcher.wait(30) == 0, watcher.stderr.read() if watcher.stderr else ""
        out = b""
        while select.select([main_fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the terminal closed with the watcher (EIO on Linux)
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main_fd)
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
    lines = out.decode().splitlines()
    assert len(lines) == 3 and not any(line.startswith("{") for line in lines), lines
    assert all(GATEWAY_ID in line for line in lines)
    health = [line for line in lines if " health " in line]
    assert health and "uplink connected" in health[0] and "config local" in health[0], lines
