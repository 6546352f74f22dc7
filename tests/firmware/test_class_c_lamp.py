"""Acceptance: a class C lamp controller on real MicroPython obeys a dim command sent by the gateway.

One MicroPython process (the WebAssembly port, via ``run_micropython.mjs``) runs
``scenario_class_c.py``: the firmware's ``Device``, ``nodes/lamp_controller.py`` and its
``sensors`` with ``machine`` shimmed. This test plays the gateway with its real parts:
``JoinServer`` for the join, ``SessionTable`` for the uplinks, ``gateway.lorawan.phy`` to build
downlinks, the ``edgegw/lamp-controller`` profile to encode the command (``set_dim``) and decode
the reports, and ``gateway.lorawan.mac`` to read the MAC answers. MAC command layouts and status
bits: LoRaWAN 1.0.4 §5; EU868 values: RP002-1.0.3 §2.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.codec.profile import Profile
from gateway.config import LorawanSection
from gateway.lorawan import mac as gw_mac
from gateway.lorawan import phy
from gateway.lorawan.join import JoinServer
from gateway.messages import UplinkData
from tests.firmware.gateway_side import JOIN_EUI, GatewaySide, device_profile, otaa_device, run_scenario

DEADLINE_S = 20.0
MAX_LINES = 200

DEV_EUI = "70b3d57ed00c0001"
APP_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
LISTEN_MS = 600_000
# LinkADRReq: DR5, TXPower 1 (16 - 2 dBm EIRP -> 12 dBm conducted), ChMask 0x00FF (the 3 default + 5
# CFList channels), NbTrans 1; RXParamSetupReq: RX1DROffset 1, RX2 DR3, 869.525 MHz; DevStatusReq.
MAC_FOPTS = bytes.fromhex("0351ff0001") + bytes((0x05, 0x13)) + (8_695_250).to_bytes(3, "little") + b"\x06"


@dataclass
class Gateway(GatewaySide):
    """MAC commands in RX1 after the first report, then the dim command in the first class C window."""

    profile: Profile = field(kw_only=True)
    fcnt_down: int = 0
    uplinks: list[UplinkData] = field(default_factory=list)
    listens: list[dict[str, Any]] = field(default_factory=list)
    command: bytes | None = None

    def _downlink(self, **kw: Any) -> bytes:
        frame = self.downlink(DEV_EUI, self.fcnt_down, **kw)
        self.fcnt_down += 1
        return frame

    def uplink(self, up: UplinkData) -> bytes | None:
        self.uplinks.append(up)
        return self._downlink(fport=None, payload=b"", fopts=MAC_FOPTS) if len(self.uplinks) == 1 else None

    def listen(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.listens.append(msg)
        if len(self.listens) > 1:
            return {"phy": None}
        # The command as the gateway's rules would send it: profile encoder, then the downlink frame.
        encoded = self.profile.encode("set_dim", {"percent": 40})
        self.command = encoded.payload
        frame = self._downlink(fport=encoded.fport, payload=encoded.payload)
        return {"phy": frame.hex(), "after_ms": 30_000}


@dataclass
class Run:
    gateway: Gateway
    events: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def run() -> Run:
    device = otaa_device(DEV_EUI, APP_KEY, "edgegw/lamp-controller")
    gateway = Gateway(
        JoinServer(LorawanSection(), [device]), profile=device_profile("edgegw/lamp-controller")
    )
    args = {"otaa": {"dev_eui": DEV_EUI, "join_eui": JOIN_EUI, "app_key": APP_KEY}, "listen_ms": LISTEN_MS}
    events, _ = run_scenario("scenario_class_c.py", args, gateway, deadline_s=DEADLINE_S, max_lines=MAX_LINES)
    return Run(gateway, {e["event"]: e for e in events})


def test_mac_commands_from_the_class_a_downlink_are_applied(run: Run) -> None:
    first = run.events["first"]
    assert run.events["joined"]["ok"] and first["reason"] == "first"
    assert first["down"]["fopts"] == MAC_FOPTS.hex()
    assert (first["dr"], first["power_dbm"], first["rx1_dr_offset"], first["rx2_dr"]) == (5, 12, 1, 3)
    assert len(first["channels_hz"]) == 8  # 3 default + 5 CFList channels from the join-accept


def test_class_c_listens_on_rx2_and_the_lamp_obeys_the_dim_command(run: Run) -> None:
    gw = run.gateway
    # RX2 as the network set it: 869.525 MHz at DR3 (SF9), open until the deadline asked for.
    listen = gw.listens[0]
    assert (listen["freq_hz"], listen["sf"], listen["bw_hz"]) == (869_525_000, 9, 125_000)
    c = run.events["class_c"]
    assert c["down"] == {
        "fport": 20,
        "payload": gw.command.hex() if gw.command else None,
        "fopts": "",
        "fcnt": 1,
    }
    assert gw.command == b"\x02\x28"  # set_dim 40 % (profile encoder)
    # Relay closed and PWM at 40 % (duty_u16 = 40 * 65535 // 100).
    assert c["obeyed"] and c["relay"] == 1 and c["duty"] == 40 * 65535 // 100


def test_next_uplink_reports_the_new_state_with_the_mac_answers(run: Run) -> None:
    gw = run.gateway
    assert run.events["report"]["reason"] == "command"
    report = gw.uplinks[1]
    decoded = gw.profile.decode(report.fport or 0, report.payload, {}).data
    assert (decoded["relay_on"], decoded["dim_level"], decoded["commanded"]) == (True, 40, True)
    frame = phy.parse(report.frame.phy_payload)
    commands, rest = gw_mac.parse_commands(frame.fopts, uplink=True)  # type: ignore[union-attr]
    assert rest == b""
    # RXParamSetupAns is sticky (§5.4: until a class A downlink), then LinkADRAns and DevStatusAns:
    # Battery 0 = external power; Margin 0 (the shim reports no SNR).
    assert [(c.name, c.payload) for c in commands] == [
        ("RXParamSetupAns", b"\x07"),
        ("LinkADRAns", b"\x07"),
        ("DevStatusAns", b"\x00\x00"),
    ]
    assert gw.tx[-1]["power_dbm"] == 12 and gw.tx[-1]["sf"] == 7


def test_listen_ends_at_its_deadline_when_nothing_comes(run: Run) -> None:
    assert run.events["done"]["quiet"] is True
    assert len(run.gateway.listens) == 2
