"""Every downlink command of the edgegw node profiles is understood by its firmware, under CPython.

The MicroPython run (test_nodes_e2e.py) sends a few commands through the radio path; this
sweeps them all quickly: each command of ``device_profiles/edgegw/*.yaml`` is encoded with the
gateway's profile encoder (``Profile.encode``) and handed to the node's ``on_downlink``, and
the node's state must show it. Malformed or foreign payloads must be refused, never raise.
The node modules import no ``machine`` (their drivers are passed in), so they run here as is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.profile import Profile, load_profile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from nodes import commands  # type: ignore[import-not-found]  # noqa: E402
from nodes.counter import CounterNode  # type: ignore[import-not-found]  # noqa: E402
from nodes.display import DisplayNode  # type: ignore[import-not-found]  # noqa: E402
from nodes.fill_level import FillLevelNode  # type: ignore[import-not-found]  # noqa: E402
from nodes.lamp_controller import LampControllerNode  # type: ignore[import-not-found]  # noqa: E402
from nodes.noise import NoiseNode  # type: ignore[import-not-found]  # noqa: E402
from nodes.water_level import WaterLevelNode  # type: ignore[import-not-found]  # noqa: E402


class Output:
    def __init__(self) -> None:
        self.state: tuple[bool, int] | None = None

    def set(self, on: bool, percent: int) -> None:
        self.state = (on, percent)


class Screen:
    chips = 2

    def __init__(self) -> None:
        self.shown: dict[int, int] = {}

    def show(self, line: int, value: int) -> None:
        self.shown[line] = value


def _profile(name: str) -> Profile:
    return load_profile(ROOT / "device_profiles" / "edgegw" / f"{name}.yaml", expected_id=f"edgegw/{name}")


def _send(profile: Profile, node: Any, command: str, params: dict[str, Any]) -> bool:
    down = profile.encode(command, params)
    assert down.fport == commands.FPORT
    return bool(node.on_downlink(down.fport, down.payload))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("fill-level", lambda: FillLevelNode(None, None, None, None, None)),
        ("noise", lambda: NoiseNode(None, None, None)),
        ("water-level", lambda: WaterLevelNode(None, None, None, None)),
        ("counter", lambda: CounterNode(None, None, None, None)),
        ("lamp-controller", lambda: LampControllerNode(None, Output(), None)),
    ],
)
def test_set_interval_reaches_the_report_interval(name: str, make: Any) -> None:
    node = make()
    assert _send(_profile(name), node, "set_interval", {"seconds": 1234})
    assert node.config["report_interval_s"] == 1234


def test_lamp_commands() -> None:
    profile, output = _profile("lamp-controller"), Output()
    node = LampControllerNode(None, output, None)
    assert output.state == (False, 0)  # dark until told otherwise
    assert _send(profile, node, "set_dim", {"percent": 70})
    assert (node.relay_on, node.dim_pct, output.state) == (True, 70, (True, 70))
    assert _send(profile, node, "switch", {"state": "off"})
    assert (node.relay_on, node.dim_pct, output.state) == (False, 0, (False, 0))
    assert _send(profile, node, "switch", {"state": "on"})  # back at the last non-zero level
    assert output.state == (True, 70)
    assert _send(profile, node, "set_dim_level", {"level_pct": 0})  # 0 % opens the relay
    assert output.state == (False, 0)
    assert _send(profile, node, "switch", {"state": "on"})
    assert output.state == (True, 70)


def test_display_commands() -> None:
    profile, screen = _profile("display"), Screen()
    node = DisplayNode(None, screen, None, None)
    assert _send(profile, node, "show_counts", {"today": 9_999_999, "year": 0})
    assert screen.shown == {0: 9_999_999, 1: 0} and node.shown == [9_999_999, 0]
    assert _send(profile, node, "show_count", {"value": 17})
    assert _send(profile, node, "show_count_line", {"line": 1, "value": 4321})
    assert node.shown == [17, 4321]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=12))
def test_any_payload_is_refused_or_applied_never_raises(fport: int, payload: bytes) -> None:
    nodes = [
        FillLevelNode(None, None, None, None, None),
        NoiseNode(None, None, None),
        WaterLevelNode(None, None, None, None),
        CounterNode(None, None, None, None),
        LampControllerNode(None, Output(), None),
        DisplayNode(None, Screen(), None, None),
    ]
    for node in nodes:
        applied = node.on_downlink(fport, payload)
        assert applied in (True, False)
        if applied:
            assert fport == commands.FPORT
        if "report_interval_s" in node.config:
            assert node.config["report_interval_s"] >= commands.MIN_INTERVAL_S
