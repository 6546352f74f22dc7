"""Helpers for end-to-end tests: the agent as a process, the CLI as a process, test devices."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder

GATEWAY_ID = "gw-test-1"
GATEWAY_EUI = bytes.fromhex("b827ebfffe000001")


def em310(battery: int, distance_mm: int, tilt: bool) -> bytes:
    """Milesight EM310-UDL TLV payload (vendor README: 01 75 battery, 03 82 distance LE, 04 00 position)."""
    return (
        bytes([0x01, 0x75, battery, 0x03, 0x82])
        + distance_mm.to_bytes(2, "little")
        + bytes([4, 0, int(tilt)])
    )


def make_device(n: int) -> AbpDevice:
    return AbpDevice(
        dev_eui=bytes.fromhex(f"70b3d57ed000000{n}"),
        dev_addr=bytes.fromhex(f"2601100{n}"),
        nwk_s_key=bytes([n]) * 16,
        app_s_key=bytes([0x10 + n]) * 16,
        profile="milesight/em310-udl",
    )


class AgentProcess:
    """`python -m gateway run` with its stderr collected."""

    def __init__(self, config_file: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config_file)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def stop(self, timeout_s: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def final_counters(self) -> dict[str, Any]:
        for line in self.lines:
            match = re.search(r"final counters (\{.*\})$", line)
            if match:
                doc: dict[str, Any] = json.loads(match.group(1))
                return doc
        raise AssertionError("no final counters line in the agent's log:\n" + "\n".join(self.lines[-20:]))


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def minimal_config(workdir: Path, udp_port: int, mqtt_port: int) -> Path:
    """The foundation issue's minimal config file, with test ports and ``workdir/data``."""
    config_file = workdir / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, tls: false}}\n"
        f"data_dir: {workdir / 'data'}\n"
    )
    return config_file


def up_records(sub: Any) -> list[dict[str, Any]]:
    """Every record a subscriber got in ``up`` batches, in order."""
    return [r for batch in sub.json_on(f"edgegw/{GATEWAY_ID}/up") for r in batch["records"]]


def register_abp(config_file: Path, device: AbpDevice) -> None:
    """`edgegw device add --abp` of a simulated device, as an installer would (fails the test if refused)."""
    added = cli(
        config_file, "device", "add", "--dev-eui", device.dev_eui.hex(), "--profile", device.profile, "--abp",
        "--dev-addr", device.dev_addr.hex(), "--nwkskey", device.nwk_s_key.hex(),
        "--appskey", device.app_s_key.hex(),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def wait_ready(forwarder: PacketForwarder, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not forwarder.pull(timeout_s=0.3):
        assert time.monotonic() < deadline, "agent did not answer PULL_DATA"
