"""Issues 6 and 7 acceptance, every part real: while the backhaul is down the agent still raises a
flood alert locally (visible in `edgegw rules` at once) and keeps the readings; when the broker
comes back the alert is delivered first, ahead of the backlog, and nothing is lost.

The subscriber has a persistent session on a persistent broker, so it sees every message in the
order the agent published it, whoever reconnects first after the outage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from simulator.forwarder import PacketForwarder
from tests.conftest import free_port
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    register_abp,
    wait_ready,
)
from tests.reliability.conftest import DurableSubscriber, PersistentBroker

BACKLOG = 40


def test_flood_alert_raised_offline_and_delivered_first_on_reconnection(
    tmp_path: Path, persistent_broker: PersistentBroker
) -> None:
    river, container = make_device(1), make_device(2)
    rules = tmp_path / "flood.yaml"
    # A downward-looking distance sensor over the river (EM310-UDL reports `distance` in mm like a
    # radar gauge): stage in cm = 450 - distance / 10; the rule of rules/examples/flood.yaml.
    rules.write_text(
        "schema_version: 1\nrules:\n  - id: river-rising\n"
        f"    devices: {{dev_euis: ['{river.dev_eui.hex()}']}}\n"
        "    when:\n      rate_of_change:\n"
        "        value: {field: distance, scale: -0.1, offset: 450}\n"
        "        window_s: 900\n        per_s: 900\n        above: 10\n        clear_below: 2\n"
        "        min_points: 3\n"
        "    severity: warning\n    message: river rising fast\n"
    )
    udp_port = free_port(__import__("socket").SOCK_DGRAM)
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {persistent_broker.port}, tls: false, reconnect_max_s: 1.0}}\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"rules: {{path: {rules}}}\n"
    )
    for d in (river, container):
        register_abp(config_file, d)
    sub = DurableSubscriber(persistent_broker, f"edgegw/{GATEWAY_ID}/+", client_id="outage-alert-sub")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            time.sleep(0.5)
            persistent_broker.stop_saving()  # the backhaul goes down
            for i in range(BACKLOG):  # routine readings pile up in the outbox
                fwd.send_frames([(container.uplink(em310(90, 1500 + i, False), 85), {})])
            for distance_mm in (3000, 2900, 2800, 2700):  # the river rises 10 cm a reading
                fwd.send_frames([(river.uplink(em310(95, distance_mm, False), 85), {})])
                time.sleep(0.3)
            time.sleep(0.5)
            view = cli(config_file, "rules", "--json")
            assert view.returncode == 0, view.stderr
            episodes = json.loads(view.stdout)["open_episodes"]  # acted on locally, offline
            assert [(e["rule"], e["dev_eui"]) for e in episodes] == [("river-rising", river.dev_eui.hex())]
            persistent_broker.start()  # the backhaul is back
            deadline = time.monotonic() + 30
            while len([t for t in sub.topics if t.endswith("/up")]) == 0 or len(sub.snapshot()) < BACKLOG + 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        assert agent.stop() == 0
        sub.close()
    if len(sub.snapshot()) < BACKLOG + 5:  # say why: the agent's own counters and its log tail
        counters = agent.final_counters()
        wanted = ("forwarder", "outbox", "uplink", "rules", "pipeline")
        log_tail = "\n".join(agent.lines[-40:])
        raise AssertionError(
            f"got {len(sub.snapshot())} ids on {sub.topics}\n"
            f"{ {k: v for k, v in counters.items() if k.startswith(wanted)} }\n{log_tail}"
        )
    order = [t.rsplit("/", 1)[-1] for t in sub.topics if t.endswith(("/up", "/alert"))]
    assert order[0] == "alert", order  # ahead of the whole backlog
    ids = sub.snapshot()
    assert any("river-rising" in i for i in ids), ids[:3]
    readings = {i for i in ids if "river-rising" not in i}
    assert len(readings) == BACKLOG + 4  # nothing lost while the broker was down
