"""The gateway's own reports, end to end: ``health`` (with the host's CPU, memory, disk and
temperature) and the paged ``inventory`` of devices heard, from the agent as a process to a real
subscriber, checked against their published JSON Schemas (gateway/schemas/)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, em310, wait_ready

pytestmark = pytest.mark.e2e


def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((resources.files("gateway") / "schemas" / name).read_text())
    return doc


def test_health_and_inventory_report_the_host_and_the_devices_heard(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, devices = setup
    text = config_file.read_text().replace(
        "tls: false}", "tls: false, health_interval_s: 0.5, inventory_interval_s: 0.5}"
    )
    config_file.write_text(text)
    sub = subscribe(f"edgegw/{GATEWAY_ID}/+")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames(
                [(devices[0].uplink(em310(92, 2116, False), 85), {"rssi_dbm": -97, "snr_db": 6.5})]
            )
            fwd.send_frames([(bytes.fromhex("40ffffffff0000000155aabbccdd"), {})])  # unknown DevAddr

            def heard(msgs: list[Any]) -> bool:
                pages = [json.loads(m.payload) for m in msgs if m.topic.endswith("/inventory")]
                return any(p["devices"] for p in pages)

            sub.wait_for(heard, timeout_s=20)
            sub.wait_for(lambda msgs: any(m.topic.endswith("/health") for m in msgs), timeout_s=20)
    finally:
        assert agent.stop() == 0
    health = sub.json_on(f"edgegw/{GATEWAY_ID}/health")[-1]
    jsonschema.validate(health, schema("health-v1.json"))
    host = health["host"]
    assert 0 < host["rss_mib"] < 1024 and host["cpu_pct"] >= 0
    assert host["disk"]["total_mib"] > 0 and 0 <= host["disk"]["used_pct"] <= 100
    pages = sub.json_on(f"edgegw/{GATEWAY_ID}/inventory")
    for page in pages:
        jsonschema.validate(page, schema("inventory-v1.json"))
    (entry,) = next(p for p in reversed(pages) if p["devices"])["devices"]
    assert entry["dev_eui"] == devices[0].dev_eui.hex() and entry["profile"] == devices[0].profile
    assert entry["rssi_dbm"] == -97 and entry["snr_db"] == 6.5 and entry["battery"] == 92
    assert entry["frames"] == 1 and entry["last_seen"].endswith("Z")
