"""`edgegw rules` against a running agent, and hot reload of the rules file end to end:
a valid new file is applied (state kept for unchanged rule ids), an invalid one is refused
with file / key path / reason and the previous rules keep running, visible in `edgegw rules`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

LAMP = "0004a30b00f00001"
RULES_V1 = f"""
schema_version: 1
rules:
  - id: container-tilted
    devices: {{profiles: [milesight/em310-udl]}}
    when: {{flag: {{field: position, equals: tilt}}}}
    severity: info
  - id: container-full
    devices: {{profiles: [milesight/em310-udl]}}
    when: {{threshold: {{value: {{field: distance, fill_empty: 2000, fill_full: 300}}, above: 80}}}}
lighting:
  - id: avenue
    devices: {{dev_euis: ["{LAMP}"]}}
    command: set_dim_level
    preset: abaissement-22h-05h
"""
RULES_V2 = RULES_V1.replace("id: container-full", "id: container-nearly-full").replace(
    "above: 80", "above: 60"
)
RULES_BAD = RULES_V2.replace("above: 60", "above: sixty")


def rules_status(config_file: Path) -> dict[str, Any]:
    result = cli(config_file, "rules", "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def wait_status(
    config_file: Path, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = rules_status(config_file)
        if ok(doc):
            return doc
        assert time.monotonic() < deadline, f"rules status never matched: {json.dumps(doc)}"
        time.sleep(0.3)


def replace_file(path: Path, text: str, bump_s: float) -> None:
    path.write_text(text)
    # A distinct mtime even on file systems with coarse timestamps: the reloader compares mtimes.
    stamp = time.time() + bump_s
    os.utime(path, (stamp, stamp))


def test_rules_view_and_hot_reload_on_a_running_agent(
    setup: tuple[Path, int, list[AbpDevice]], tmp_path: Path
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_V1)
    with config_file.open("a") as f:
        f.write(f"rules: {{path: {rules}, reload_check_s: 0.2}}\n")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames([(dev1.uplink(em310(90, 1800, True), 85), {})])  # tilted
            first = wait_status(config_file, lambda d: bool(d["open_episodes"]))

            replace_file(rules, RULES_V2, 1)
            applied = wait_status(config_file, lambda d: bool(d["last_reload"]))

            replace_file(rules, RULES_BAD, 2)
            refused = wait_status(config_file, lambda d: d["last_reload"]["ok"] is False)
            human = cli(config_file, "rules")
    finally:
        assert agent.stop() == 0

    assert first["enabled"] is True and first["source"] == str(rules)
    assert [r["id"] for r in first["rules"]] == ["container-tilted", "container-full"]
    (episode,) = first["open_episodes"]
    assert episode["rule"] == "container-tilted" and episode["dev_eui"] == dev1.dev_eui.hex()
    assert first["disabled"] == {} and first["last_reload"] is None
    nxt = first["next_lighting_change"]
    assert nxt["group"] == "avenue" and nxt["at_s"] > time.time() - 60 and nxt["level_pct"] in (0, 50, 100)
    clock = first["lighting_clock"]
    if clock["quality"] in ("gps", "ntp", "holdover"):
        assert clock["mode"] == "schedule"
        assert first["lighting"]["avenue"][LAMP] in (0, 50, 100)  # commanded from the gateway clock
    else:
        # This host's clock is not synchronised (a container, a Pi before NTP): for its first 15 min
        # the agent commands nothing from a time it cannot trust (docs/rules.md, "When the clock is
        # not trusted"); the lamps keep their level.
        assert clock == {"quality": "unsynced", "mode": "hold"}
        assert LAMP not in first["lighting"].get("avenue", {})

    assert applied["last_reload"]["ok"] is True
    assert [r["id"] for r in applied["rules"]] == ["container-tilted", "container-nearly-full"]
    assert [e["rule"] for e in applied["open_episodes"]] == ["container-tilted"]  # state kept

    error = refused["last_reload"]["error"]
    assert f"{rules}: rules[1].when.threshold.above: expected a number or $parameter" in error
    assert [r["id"] for r in refused["rules"]] == ["container-tilted", "container-nearly-full"]
    assert [e["rule"] for e in refused["open_episodes"]] == ["container-tilted"]
    assert human.returncode == 0 and "REFUSED, previous rules kept" in human.stdout
    assert "container-tilted" in human.stdout and "next lighting change" in human.stdout
    assert any("new rules refused" in line for line in agent.lines)
