"""End to end, every part real: UDP datagrams from a fake packet forwarder → the agent
process (`python -m gateway run`) → a real mosquitto → a subscriber.

Asserts the decoded values at the subscriber, that bad-MIC and replayed frames are
not forwarded but counted, that SIGTERM stops the agent cleanly (exit 0, retained
state 'offline'), and that a restart keeps the replay window closed.
"""

from __future__ import annotations

import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    up_records,
    wait_ready,
)

pytestmark = pytest.mark.e2e


def test_frames_arrive_decoded_and_bad_ones_are_counted_not_forwarded(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    sub = subscribe(f"edgegw/{GATEWAY_ID}/#")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            good = dev1.uplink(em310(92, 2116, True), 85)
            token = fwd.send_frames(
                [(good, {"rssi_dbm": -97.0, "snr_db": -3.5, "freq_hz": 868_300_000, "sf": 9})]
            )
            assert fwd.wait_ack(token, 2.0), "no PUSH_ACK"
            sub.wait_for(lambda _m: len(up_records(sub)) >= 1)

            # A forged frame (right DevAddr and counter, wrong key) and the good frame again, its
            # counter still the last accepted one: a retransmission (NbTrans), not forwarded again.
            forged = AbpDevice(
                dev2.dev_eui, dev2.dev_addr, bytes(16), dev2.app_s_key, dev2.profile, dev2.fcnt_up
            )
            fwd.send_frames([(forged.uplink(em310(1, 1, False), 85), {}), (good, {})])
            # Then a good frame from each device in one datagram.
            fwd.send_frames(
                [(dev2.uplink(em310(80, 400, False), 85), {}), (dev1.uplink(em310(91, 2000, False), 85), {})]
            )
            sub.wait_for(lambda _m: len(up_records(sub)) >= 3)
            fwd.send_frames([(good, {})])  # dev1 is at FCnt 1 now: the old frame again is a replay
            time.sleep(0.5)  # anything wrongly forwarded would have arrived by now
    finally:
        code = agent.stop()
    assert code == 0, "\n".join(agent.lines[-20:])

    got = up_records(sub)
    assert len(got) == 3, got
    first = got[0]
    assert first["dev_eui"] == dev1.dev_eui.hex() and first["fcnt"] == 0 and first["fport"] == 85
    assert first["data"] == {"battery": 92, "distance": 2116, "position": "tilt"}
    assert first["profile"] == "milesight/em310-udl" and first["kind"] == "reading"
    assert first["raw"] == em310(92, 2116, True).hex()
    assert first["rx"]["rssi_dbm"] == -97.0 and first["rx"]["snr_db"] == -3.5
    assert first["rx"]["freq_hz"] == 868_300_000 and first["rx"]["sf"] == 9
    assert first["rx"]["gateway_eui"] == GATEWAY_EUI.hex()
    assert first["time_quality"] in ("ntp", "unsynced")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["received_at"])
    by_dev = {(r["dev_eui"], r["fcnt"]): r["data"] for r in got}
    assert by_dev[(dev2.dev_eui.hex(), 0)] == {"battery": 80, "distance": 400, "position": "normal"}
    assert by_dev[(dev1.dev_eui.hex(), 1)] == {"battery": 91, "distance": 2000, "position": "normal"}
    assert len({r["id"] for r in got}) == 3

    # Every message the platform got matches the published JSON Schemas (gateway/schemas/).
    schemas = resources.files("gateway") / "schemas"
    up_schema = json.loads((schemas / "up-v1.json").read_text())
    state_schema = json.loads((schemas / "state-v1.json").read_text())
    for batch in sub.json_on(f"edgegw/{GATEWAY_ID}/up"):
        jsonschema.validate(batch, up_schema)
    for state in sub.json_on(f"edgegw/{GATEWAY_ID}/state"):
        jsonschema.validate(state, state_schema)

    counters = agent.final_counters()
    assert counters["pipeline"]["rejected.bad_mic"] == 1
    assert counters["pipeline"]["rejected.replayed_fcnt"] == 1
    assert counters["pipeline"]["retransmissions"] == 1
    assert counters["pipeline"]["accepted"] == 3

    states = [m["state"] for m in sub.json_on(f"edgegw/{GATEWAY_ID}/state")]
    assert states[0] == "online" and states[-1] == "offline"


def test_replay_window_stays_closed_across_a_restart(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (dev1, _dev2) = setup
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    frames = [dev1.uplink(em310(90, 1000 + i, False), 85) for i in range(3)]
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames([(f, {}) for f in frames])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 3)
    finally:
        assert agent.stop() == 0
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            fwd.send_frames([(frames[2], {})])  # replayed after the restart
            fresh = dev1.uplink(em310(89, 999, False), 85)
            fwd.send_frames([(fresh, {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 4)
            time.sleep(0.3)
    finally:
        assert agent.stop() == 0
    got = up_records(sub)
    assert [r["fcnt"] for r in got] == [0, 1, 2, 3]
    assert agent.final_counters()["pipeline"]["rejected.replayed_fcnt"] == 1


def test_a_device_registered_while_the_agent_runs_is_served(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, _devices = setup
    late = make_device(7)
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            added = cli(
                config_file, "device", "add", "--dev-eui", late.dev_eui.hex(), "--profile", late.profile,
                "--abp", "--dev-addr", late.dev_addr.hex(), "--nwkskey", late.nwk_s_key.hex(),
                "--appskey", late.app_s_key.hex(),
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            deadline = time.monotonic() + 15  # the agent re-reads a changed registry every 10 s
            while not up_records(sub) and time.monotonic() < deadline:
                fwd.send_frames([(late.uplink(em310(70, 700, False), 85), {})])
                time.sleep(1.0)
    finally:
        assert agent.stop() == 0
    got = up_records(sub)
    assert got and got[0]["dev_eui"] == late.dev_eui.hex() and got[0]["data"]["battery"] == 70
