"""Issue 19 against the real agent: the views keep to 80 columns, end quietly in a closed pipe,
``status --watch`` refreshes, and ``tail --device`` says when a device is not registered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

SITE = "metropole/quartier-saint-michel/rue-des-tanneurs-42"
RULES = """
schema_version: 1
location: {lat: 48.85, lon: 2.35, timezone: Europe/Paris}
rules:
  - id: container-tilted
    devices: {profiles: [milesight/em310-udl]}
    when: {flag: {field: position, equals: tilt}}
    severity: info
lighting:
  - id: avenue
    devices: {dev_euis: ["0004a30b00f00001"]}
    command: set_dim_level
    preset: abaissement-22h-05h
"""


def edgegw(
    config_file: Path, *args: str, columns: str | None = "80", stdout: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_") and k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_file), *args],
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def into_closed_pipe(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as after `head -1`
    try:
        return edgegw(config_file, *args, stdout=write_end)
    finally:
        os.close(write_end)


def test_views_of_a_running_agent_fit_80_columns_and_pipes(
    setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with config_file.open("a") as f:
        f.write(f"rules: {{path: {rules}}}\n")
    for n, device in enumerate((dev1, dev2)):
        assert (
            cli(config_file, "device", "set", device.dev_eui.hex(), "--site", f"{SITE}-{n}").returncode == 0
        )
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            unregistered = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(config_file), "tail", "--device",
                 "70b3d57ed00000ff"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            fwd.send_frames([(dev1.uplink(em310(77, 1500, True), 85), {"rssi_dbm": -101.0, "snr_db": -4.0})])
            fwd.send_frames([(dev2.uplink(em310(55, 900, False), 85), {})])
            deadline = time.monotonic() + 15
            while json.loads(cli(config_file, "status", "--json").stdout)["pipeline"].get("accepted", 0) < 2:
                assert time.monotonic() < deadline, "the agent did not accept the two uplinks"
                time.sleep(0.2)
            views = {
                name: edgegw(config_file, *argv)
                for name, argv in {
                    "devices": ("devices",), "wide": ("devices", "--wide"), "status": ("status",),
                    "rules": ("rules",), "device list": ("device", "list"), "buffer": ("buffer",),
                    "piped": ("devices",),
                }.items()
            }  # fmt: skip
            views["piped"] = edgegw(config_file, "devices", columns=None)  # no terminal, no COLUMNS: 80
            closed = {
                " ".join(argv): into_closed_pipe(config_file, *argv)
                for argv in (
                    ("status", "--json"), ("devices", "--json"), ("rules",), ("device", "list", "--json"),
                    ("devices",), ("status",),
                )
            }  # fmt: skip
            watch = edgegw(config_file, "status", "--watch", "0.5", "--count", "2")
            time.sleep(0.5)
            assert unregistered.poll() is None  # still waiting for the device, as asked
            unregistered.terminate()
            _, tail_err = unregistered.communicate(timeout=10)
            silent = edgegw(config_file, "devices", "--silent-for", "1h", "--json")
    finally:
        assert agent.stop() == 0

    for name, done in views.items():
        assert done.returncode == 0, (name, done.stderr)
        if name != "wide":
            assert max(len(line) for line in done.stdout.splitlines()) <= 80, (name, done.stdout)
    assert "…" in views["devices"].stdout and f"{SITE}-0" in views["wide"].stdout
    assert views["piped"].stdout.splitlines()[0] == views["devices"].stdout.splitlines()[0]  # same widths
    assert "open episodes:" in views["rules"].stdout
    assert re.search(r"next lighting change: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", views["rules"].stdout)
    for name, done in closed.items():
        assert (done.returncode, done.stderr) == (0, ""), name
    refreshes = [line for line in watch.stdout.splitlines() if line.startswith("devices ")]
    assert watch.returncode == 0 and len(refreshes) == 2
    assert all(line.split(None, 1)[1] == "2 registered, 2 heard" for line in refreshes)
    assert "70b3d57ed00000ff is not registered: showing nothing until it is" in tail_err
    assert json.loads(silent.stdout) == {"devices": []}  # both heard a moment ago
