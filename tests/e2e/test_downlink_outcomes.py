"""Downlink outcomes through the running agent (issue 20): a platform `downlink` command with
confirmed=true to a class A device is answered at once (queued), sent in the receive windows of the
device's next uplink, sent again as a NEW frame (a higher FCntDown, LoRaWAN 1.0.4 §4.3.1.3) after each
uplink without ACK (§4.3.1.2), and its end published on cmd-result with the same seq: `unacknowledged`
when the device never acknowledges, `acknowledged` when it does. The technician's `tail` shows both.

Real agent process, real UDP packet forwarder, real SQLite, real mosquitto.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.sign import command, sign_envelope
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, em310, wait_ready

pytestmark = pytest.mark.e2e

RETRIES = 2
"""lorawan.confirmed_retries for this test: three transmissions in all."""
PAYLOAD = "ff1001"


class TechnicianTail:
    """`edgegw tail --json` as the technician runs it next to the agent, its events collected."""

    def __init__(self, config_file: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config_file), "tail", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))

    def outcomes(self) -> list[tuple[int, str]]:
        return [(e["ref"]["seq"], e["status"]) for e in list(self.events) if e.get("outcome")]

    def wait_outcomes(self, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(5)


def ack_uplink(device: AbpDevice, payload: bytes, fport: int) -> bytes:
    """The device's next uplink with FCtrl ACK set: it acknowledges the confirmed downlink it got."""
    frame = phy.build_data_frame(
        SessionKeys(device.nwk_s_key, device.app_s_key), mtype=MType.UNCONFIRMED_DATA_UP,
        dev_addr=device.dev_addr, fcnt32=device.fcnt_up, fport=fport, payload=payload, ack=True,
    )  # fmt: skip
    device.fcnt_up += 1
    return frame


def device_reads(device: AbpDevice, data_b64: str) -> tuple[int, bool, bytes]:
    """(FCntDown, confirmed, decrypted payload) of a downlink, MIC checked as the device does."""
    down = phy.parse(base64.b64decode(data_b64))
    assert isinstance(down, phy.DataFrame) and down.dev_addr == device.dev_addr and down.fport is not None
    keys = SessionKeys(device.nwk_s_key, device.app_s_key)
    assert keys.data_mic(down.mic_input, device.dev_addr, down.fcnt16, False) == down.mic
    plain = keys.crypt_frm_payload(down.frm_payload, device.dev_addr, down.fcnt16, False, down.fport)
    return down.fcnt16, down.mtype is MType.CONFIRMED_DATA_DOWN, plain


def test_a_confirmed_platform_downlink_is_retried_and_its_end_reported_on_cmd_result_and_in_tail(
    tmp_path: Path, mosquitto: Broker, setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (device, _dev2) = setup
    config_file.write_text(config_file.read_text() + f"lorawan: {{confirmed_retries: {RETRIES}}}\n")
    platform_key = Ed25519PrivateKey.generate()
    (tmp_path / "data" / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    results = subscribe(f"edgegw/{GATEWAY_ID}/cmd-result")
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")

    def send_downlink(seq: int) -> None:
        params = {"dev_eui": device.dev_eui.hex(), "fport": 85, "payload_hex": PAYLOAD, "confirmed": True}
        envelope = sign_envelope(platform_key, command("downlink", params), target=GATEWAY_ID, seq=seq)
        publish.single(
            f"edgegw/{GATEWAY_ID}/cmd/downlink", json.dumps(envelope), qos=1,
            hostname=mosquitto.host, port=mosquitto.port,
        )  # fmt: skip

    def answers(seq: int) -> list[dict[str, Any]]:
        return [d for d in (json.loads(m.payload) for m in results.messages) if d.get("seq") == seq]

    tmst = [1_000_000]

    def uplink(frame: bytes) -> None:
        tmst[0] += 10_000_000
        fwd.send_frames([(frame, {"tmst_us": tmst[0]})])

    ignored: list[tuple[int, bool, bytes]] = []
    agent = AgentProcess(config_file)
    tail: TechnicianTail | None = None
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
            tail = TechnicianTail(config_file)
            time.sleep(1.0)  # subscribed before anything happens
            # First command: the device never acknowledges it (it ignores what it receives).
            send_downlink(100)
            results.wait_for(lambda _m: len(answers(100)) >= 1)
            for _ in range(1 + RETRIES):
                uplink(device.uplink(em310(90, 1000, False), 85))
                down = fwd.wait_downlink(timeout_s=5.0)
                assert down is not None, "no downlink after the uplink"
                assert down.txpk["tmst"] == tmst[0] + 1_000_000  # RX1 of that uplink
                ignored.append(device_reads(device, down.txpk["data"]))
            uplink(device.uplink(em310(90, 1000, False), 85))  # still no ACK: the last word
            results.wait_for(lambda _m: len(answers(100)) >= 2)
            nothing_more = fwd.wait_downlink(timeout_s=2.0)

            # Second command: the device acknowledges it in its next uplink.
            send_downlink(101)
            results.wait_for(lambda _m: len(answers(101)) >= 1)
            uplink(device.uplink(em310(90, 1000, False), 85))
            down = fwd.wait_downlink(timeout_s=5.0)
            assert down is not None
            heard = device_reads(device, down.txpk["data"])
            uplink(ack_uplink(device, em310(90, 1000, False), 85))
            results.wait_for(lambda _m: len(answers(101)) >= 2)
            tail.wait_outcomes(2)
    finally:
        if tail is not None:
            tail.stop()
        assert agent.stop() == 0
    assert tail is not None

    # Each transmission a new frame: FCntDown 0, 1, 2, the same confirmed payload.
    assert ignored == [(n, True, bytes.fromhex(PAYLOAD)) for n in range(1 + RETRIES)]
    assert nothing_more is None  # after the last transmission, no more
    queued, ended = answers(100)
    assert queued["ok"] is True and queued["result"] == {"queued": 1} and "state" not in queued
    assert (ended["cmd"], ended["state"], ended["ok"], ended["reason"]) == (
        "downlink",
        "unacknowledged",
        False,
        "unacknowledged",
    )
    assert ended["result"]["dev_eui"] == device.dev_eui.hex()
    assert f"after {1 + RETRIES} transmissions" in ended["result"]["detail"]

    assert heard == (1 + RETRIES, True, bytes.fromhex(PAYLOAD))  # the counter goes on
    queued, ended = answers(101)
    assert queued["ok"] is True and "state" not in queued
    assert (ended["state"], ended["ok"], ended["reason"]) == ("acknowledged", True, None)

    assert tail.outcomes() == [(100, "unacknowledged"), (101, "acknowledged")]
    sent = [e["fcnt_down"] for e in tail.events if e["verdict"] == "downlink" and not e.get("outcome")]
    assert sent == [0, 1, 2, 3]


def test_fleet_send_waits_for_the_outcome_of_a_downlink_a_silent_device_never_took(
    tmp_path: Path, mosquitto: Broker, setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    """`edgegw fleet send` returns with the queued answer; with `--outcome` it waits for the end state:
    here `expired`, the device never speaking within `lorawan.downlink_ttl_s` (exit 1, said in words)."""
    config_file, udp_port, (device, _dev2) = setup
    config_file.write_text(config_file.read_text() + "lorawan: {downlink_ttl_s: 2}\n")
    platform_key = Ed25519PrivateKey.generate()
    (tmp_path / "data" / "platform-ed25519.pub").write_bytes(
        platform_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    state = subscribe(f"edgegw/{GATEWAY_ID}/state")
    broker = ["--host", "127.0.0.1", "--port", str(mosquitto.port), "--no-tls", "--wait-s", "20"]

    def fleet_send(seq: int, *extra: str) -> subprocess.CompletedProcess[str]:
        params = {"dev_eui": device.dev_eui.hex(), "fport": 85, "payload_hex": PAYLOAD}
        env_file = tmp_path / f"env-{seq}.json"
        env_file.write_text(
            json.dumps(sign_envelope(platform_key, command("downlink", params), target=GATEWAY_ID, seq=seq))
        )
        return subprocess.run(
            [sys.executable, "-m", "gateway", "fleet", "send", str(env_file), *broker, *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            state.wait_for(lambda m: any(json.loads(x.payload)["state"] == "online" for x in m))
            queued = fleet_send(200)
            ended = fleet_send(201, "--outcome")
    finally:
        assert agent.stop() == 0
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert json.loads(queued.stdout)["answers"][GATEWAY_ID]["result"] == {"queued": 1}
    assert ended.returncode == 1, ended.stdout + ended.stderr
    answer = json.loads(ended.stdout)["answers"][GATEWAY_ID]
    assert (answer["seq"], answer["state"], answer["ok"]) == (201, "expired", False)
    assert f"downlink not delivered: {GATEWAY_ID} (expired)" in ended.stderr
