"""The simulator runs the project's own node firmware (firmware/nodes/) as its device model: the
node's policy decides when to report and its own encoder makes the bytes, which the gateway's
profile decodes to what the physics measured (issue 10: what the simulator sends is what a node
would send)."""

from __future__ import annotations

import random

from gateway.codec import ProfileStore, default_profiles_dir
from simulator.models.own_nodes import FirmwareFillLevel, firmware_module
from simulator.models.waste import ContainerModel

DAY_S = 86_400


def container(collection_s: float) -> ContainerModel:
    return ContainerModel(
        rng=random.Random(3), empty_mm=2000, full_mm=300, fill_mm_per_day=400.0,
        collections_s=[collection_s], battery_pct=90, distance_mm=1500.0,
    )  # fmt: skip


def test_the_fill_level_firmware_reports_by_its_own_policy_and_the_profile_decodes_it() -> None:
    profile = ProfileStore.load_dir(default_profiles_dir()).get("edgegw/fill-level")
    node = FirmwareFillLevel(container(collection_s=DAY_S + 9 * 3600))
    wakes, sent = 0, []
    t_s = 0.0
    while t_s < 2 * DAY_S:
        m = node.wake(t_s, temperature_c=75.0 if abs(t_s - 1.5 * DAY_S) < 1 else 18.0)
        wakes += 1
        if m is not None:
            sent.append((t_s, m))
            assert m.fport == 10
            decoded = profile.decode(m.fport, m.payload).data
            assert {k: decoded[k] for k in m.values} == m.values
            # The firmware's own encoder made these bytes.
            fw = firmware_module("fill_level")
            v = m.values
            assert m.payload == fw.encode(v["distance"], v["temperature"], v["tilt"], v["fire_alarm"],
                                          v["battery_voltage"])  # fmt: skip
        t_s += node.measure_interval_s
    reports = {round(t): m for t, m in sent}
    # The policy, not a fixed schedule: far fewer reports than wake-ups, a first one, the hourly
    # ones, the collection's tilt and the return upright, the fire alarm.
    assert 40 <= len(sent) < wakes / 2
    assert 0 in reports
    assert any(m.values["tilt"] for m in reports.values())
    assert reports[round(1.5 * DAY_S)].values["fire_alarm"] is True
    assert len(node.device.sent) == len(sent)
