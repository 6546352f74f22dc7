"""A technician's day against the real agent, broker and simulated forwarder (issue 19, "what the
technician cannot see"): the configuration in effect after a push (`config show --effective`,
`status`, `diag`), each packet forwarder alive or stale, downlinks in `tail` and their failures
in `status`, a refused rules reload, and `device show` charting the profile's main quantity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.fleet.config_store import ConfigStore
from gateway.fleet.desired import DesiredConfig
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

PUSHED = DesiredConfig("2026-11-25.1", {"mqtt": {"health_interval_s": 30}}, None)
RULES = """
schema_version: 1
location: {lat: 48.85, lon: 2.35, timezone: Europe/Paris}
rules:
  - id: container-tilted
    devices: {profiles: [milesight/em310-udl]}
    when: {flag: {field: position, equals: tilt}}
    severity: info
"""
TIMING = {"tmst_us": 1_000_000}
"""An uplink with a concentrator timestamp: the agent can answer in RX1/RX2."""


def status_json(config_file: Path) -> dict[str, Any]:
    done = cli(config_file, "status", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait_status(config_file: Path, ok: Any, what: str, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = status_json(config_file)
        if ok(doc):
            return doc
        assert time.monotonic() < deadline, f"{what}: {json.dumps(doc)[:2000]}"
        time.sleep(0.3)


def tail_process(config_file: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config_file), "tail", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_a_technicians_day(setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    text = config_file.read_text().replace("tls: false}", "tls: false, health_interval_s: 60}")
    config_file.write_text(text + f"rules: {{path: {rules}, reload_check_s: 0.5}}\n")
    # A push applied before this start: the last known good overlay sets the health interval to 30.
    ConfigStore(tmp_path / "data").write_good(PUSHED, "2026-11-25T08:00:00Z")
    bundle = tmp_path / "bundle.tar.gz"

    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            wait_status(config_file, lambda d: d.get("config", {}).get("version"), "the agent did not start")
            tail = tail_process(config_file)
            time.sleep(1.0)  # tail subscribed
            # A confirmed uplink: its ACK is refused in RX1 (too late) and goes out in RX2.
            fwd.send_frames([(dev1.uplink(em310(90, 240, False), 85, confirmed=True), TIMING)])
            assert fwd.wait_downlink(timeout_s=5.0, tx_ack_error="TOO_LATE") is not None
            assert fwd.wait_downlink(timeout_s=5.0) is not None
            # Another: too late in both windows, so the downlink is not sent.
            fwd.send_frames([(dev1.uplink(em310(90, 250, False), 85, confirmed=True), TIMING)])
            assert fwd.wait_downlink(timeout_s=5.0, tx_ack_error="TOO_LATE") is not None
            assert fwd.wait_downlink(timeout_s=5.0, tx_ack_error="TOO_LATE") is not None
            status = wait_status(
                config_file,
                lambda d: d["downlinks"]["not_sent"].get("too_late"),
                "no failed downlink counted",
            )
            rules.write_text("schema_version: 1\nrules: [this is not a rule]\n")
            wait_status(
                config_file,
                lambda d: (d["rules"]["last_reload"] or {}).get("ok") is False,
                "reload not refused",
            )
            human = cli(config_file, "status", "--wide")
            effective = cli(config_file, "config", "show", "--effective", "--json")
            effective_text = cli(config_file, "config", "show", "--effective")
            show = cli(config_file, "device", "show", dev1.dev_eui.hex(), "--json")
            diag = cli(config_file, "diag", "--out", str(bundle), "--log-file", os.devnull)
            tail.terminate()
            tail_out, _ = tail.communicate(timeout=10)
    finally:
        assert agent.stop() == 0

    # The configuration in effect: the push over the local file, everywhere the technician looks.
    assert effective.returncode == 0, effective.stderr
    doc = json.loads(effective.stdout)
    assert (doc["version"], doc["state"], doc["overlay_keys"]) == ("2026-11-25.1", "applied",
                                                                   ["mqtt.health_interval_s"])  # fmt: skip
    assert doc["config"]["mqtt"]["health_interval_s"] == 30 and doc["source"] == "running agent"
    assert "mqtt.health_interval_s = 30.0  # pushed" in effective_text.stdout
    assert status["config"]["version"] == "2026-11-25.1" and status["config"]["state"] == "applied"
    assert diag.returncode == 0, diag.stderr
    with tarfile.open(bundle) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers()}
        bundled = json.loads(tar.extractfile(files["config-effective.json"]).read())  # type: ignore[union-attr]
        local = json.loads(tar.extractfile(files["config.json"]).read())  # type: ignore[union-attr]
    assert bundled["config"]["mqtt"]["health_interval_s"] == 30 and bundled["version"] == "2026-11-25.1"
    assert local["mqtt"]["health_interval_s"] == 60  # the local file, beside it

    # The packet forwarder, alive, with its last PULL_DATA and PUSH_DATA.
    (forwarder,) = status["radio"]["forwarders"]
    assert forwarder["gateway_eui"] == GATEWAY_EUI.hex() and forwarder["alive"] is True
    assert forwarder["last_pull_age_s"] is not None and forwarder["last_push_age_s"] is not None

    # Downlinks: one sent (in RX2), one not sent (too late twice), in status and in tail.
    assert status["downlinks"] == {"sent": 1, "not_sent": {"too_late": 1}}
    assert human.returncode == 0, human.stderr
    assert "downlinks  sent 1, not sent 1 (too_late 1)" in human.stdout
    assert f"forwarder  {GATEWAY_EUI.hex()} at 127.0.0.1:" in human.stdout and " alive: " in human.stdout
    assert (
        "config     pushed 2026-11-25.1 applied, over the local file: mqtt.health_interval_s" in human.stdout
    )
    assert "rules      reload REFUSED since" in human.stdout
    downlinks = [e for e in map(json.loads, tail_out.splitlines()) if e["verdict"] == "downlink"]
    assert [(e["dev_eui"], e["fcnt_down"], e["window"], e["status"]) for e in downlinks] == [
        (dev1.dev_eui.hex(), 0, "rx2", "sent"), (dev1.dev_eui.hex(), 1, "rx2", "too_late"),
    ]  # fmt: skip

    # device show charts the distance (the profile's main quantity), not the flat battery.
    assert show.returncode == 0, show.stderr
    chart = json.loads(show.stdout)["chart"]
    assert chart["value"] == "distance" and [v for _, v in chart["points"]] == [240, 250]
    low, high = chart["scale"]
    assert high - low >= 0.1 * 250  # a 10 mm step is not the chart's whole height
