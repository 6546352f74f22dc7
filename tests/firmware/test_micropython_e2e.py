"""The fill-level firmware on real MicroPython, end to end through the gateway's LoRaWAN layer.

One MicroPython process (the WebAssembly port from npm ``@micropython/micropython-webassembly-pyscript``,
run by ``run_micropython.mjs`` in Node) runs ``scenario_fill_level.py``: the firmware in
``firmware/`` with ``machine``/``onewire``/``ds18x20`` and the radio shimmed in MicroPython
(``shims/``). This test plays the gateway for every frame: ``JoinServer.handle`` for the
join-requests (its join-accept goes back into the node's RX1 window), ``SessionTable.accept``
for the data uplinks, and the ``edgegw/fill-level`` profile for the payloads. The expected
values are the simulated sensor's (``shims/sim.py``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.codec.profile import Profile
from gateway.config import LorawanSection
from gateway.lorawan import phy
from gateway.lorawan.join import JoinAccepted, JoinServer
from gateway.messages import DevEui, RadioFrame, UplinkData
from tests.firmware.gateway_side import JOIN_EUI, GatewaySide, device_profile, otaa_device, run_scenario

DEADLINE_S = 20.0
MAX_LINES = 500

DEV_EUI = "70b3d57ed0001234"
APP_KEY = "000102030405060708090a0b0c0d0e0f"
PARAMS = {"empty_distance_mm": 1200.0, "full_distance_mm": 200.0}

# Each step: what the simulated world looks like, and how long the node slept before it woke.
STEPS: list[dict[str, Any]] = [
    {"elapsed_s": 0, "sim": {"distance_mm": 1100, "temperature_c": 21.5, "tilt": False, "battery_mv": 3100}},
    {"elapsed_s": 900, "sim": {"distance_mm": 1080, "temperature_c": 20.0}},  # no reason: nothing sent
    {"elapsed_s": 900, "sim": {"distance_mm": 700}},  # moved >= 150 mm: early report
    {"elapsed_s": 900, "sim": {"tilt": True, "distance_mm": 2500}},  # emptied: tilt report
    {"elapsed_s": 900, "sim": {"tilt": False, "distance_mm": 1150, "temperature_c": -4.25}},  # back upright
    {"elapsed_s": 60, "sim": {"temperature_c": 71.0}},  # fire
    {"elapsed_s": 3600, "sim": {"temperature_c": 19.0, "echo": False}},  # interval, no echo
]
ARGS = {
    "otaa": {"dev_eui": DEV_EUI, "join_eui": JOIN_EUI, "app_key": APP_KEY},
    "dr": 5,
    "fcnt_save_every": 16,
    "join_attempts": 2,
    "config": {"report_interval_s": 3600, "fire_alarm_c": 60.0, "distance_delta_mm": 150},
    "steps": STEPS,
}


@dataclass
class Gateway(GatewaySide):
    """Leaves the first join-request unanswered, sends one downlink after the second report."""

    profile: Profile = field(kw_only=True)
    answer_joins_from: int = 1
    """The first join-request goes unanswered (the node must retry with a new DevNonce)."""
    join_requests: list[bytes] = field(default_factory=list)
    accepted: list[JoinAccepted] = field(default_factory=list)
    uplinks: list[UplinkData] = field(default_factory=list)
    rx_windows: list[dict[str, Any]] = field(default_factory=list)
    downlink_sent: bytes | None = None

    def join_request(self, frame: RadioFrame) -> bytes | None:
        self.join_requests.append(frame.phy_payload)
        if len(self.join_requests) <= self.answer_joins_from:
            return None
        accepted = self.join(frame)
        self.accepted.append(accepted)
        return accepted.phy_payload

    def uplink(self, up: UplinkData) -> bytes | None:
        self.uplinks.append(up)
        if len(self.uplinks) != 2:
            return None
        # One class A downlink after the second report: the firmware must verify and decrypt it.
        self.downlink_sent = self.downlink(DEV_EUI, 0, fport=10, payload=b"\x0e\x10")
        return self.downlink_sent

    def window(self, msg: dict[str, Any]) -> bytes | None:
        self.rx_windows.append(msg)
        return super().window(msg)


@dataclass
class Run:
    gateway: Gateway
    events: list[dict[str, Any]]
    elapsed_s: float

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == name]
        assert len(found) == 1, f"{name}: {found}"
        return found[0]


@pytest.fixture(scope="module")
def run() -> Run:
    device = otaa_device(DEV_EUI, APP_KEY, "edgegw/fill-level")
    gateway = Gateway(JoinServer(LorawanSection(), [device]), profile=device_profile("edgegw/fill-level"))
    events, elapsed_s = run_scenario(
        "scenario_fill_level.py", ARGS, gateway, deadline_s=DEADLINE_S, max_lines=MAX_LINES
    )
    return Run(gateway, events, elapsed_s)


def test_runs_on_real_micropython_with_the_pure_aes(run: Run) -> None:
    runtime = run.event("runtime")
    # The WebAssembly port has no cryptolib (checked on 1.27.0): the pure-Python AES does the work.
    assert (runtime["implementation"], runtime["platform"], runtime["aes"]) == (
        "micropython",
        "webassembly",
        "pure",
    )
    assert run.elapsed_s < DEADLINE_S


def test_join_retries_with_a_new_dev_nonce_and_the_gateway_accepts(run: Run) -> None:
    gw = run.gateway
    nonces = [phy.parse(r).dev_nonce for r in gw.join_requests]  # type: ignore[union-attr]
    # 1.0.4 §6.2.5: counted up from 0, one per request, the unanswered one included; the rejoin after
    # the reset continues from flash.
    assert [int.from_bytes(n, "big") for n in nonces] == [0, 1, 2]
    joined = run.event("joined")
    assert joined["ok"] and joined["dev_nonce"] == 2
    assert joined["dev_addr"] == gw.accepted[0].session.dev_addr.value.hex()
    # Join-requests go out at DR5 on a default channel; the accept came back in RX1 (same channel, 5 s).
    first = gw.tx[0]
    assert (first["sf"], first["bw_hz"]) == (7, 125_000)
    assert first["freq_hz"] in (868_100_000, 868_300_000, 868_500_000)
    rx1 = gw.rx_windows[0]
    assert (rx1["freq_hz"], rx1["sf"], rx1["at_ms"] - first["at_ms"]) == (first["freq_hz"], 7, 5000)
    rx2 = gw.rx_windows[1]
    assert (rx2["freq_hz"], rx2["sf"], rx2["at_ms"] - first["at_ms"]) == (869_525_000, 12, 6000)


def _expected(sim: dict[str, Any], echoes_us: list[int]) -> dict[str, Any]:
    """What the gateway must decode: the simulated world, as the sensors could measure it."""
    temperature: float = sim["temperature_c"]  # the probe is always present in STEPS
    out: dict[str, Any] = {
        "tilt": sim["tilt"],
        "fire_alarm": temperature >= 60.0,
        "echo_missing": not sim["echo"],
        # The DS18B20 reports 1/16 °C steps; the frame carries 0.01 °C.
        "temperature": round(round(temperature * 16) / 16, 2),
        "battery_voltage": sim["battery_mv"],
    }
    if sim["echo"]:
        # The ranger measures whole µs of echo: the median echo back into mm (c = 331.3 + 0.606 T m/s).
        echo = sorted(echoes_us)[len(echoes_us) // 2]
        out["distance"] = int(echo * (331.3 + 0.606 * temperature) / 1000 / 2 + 0.5)
        assert abs(out["distance"] - sim["distance_mm"]) <= 1  # and that is the simulated distance
    else:
        out["distance"] = 65535
    return out


def test_every_report_decodes_at_the_gateway_to_the_simulated_values(run: Run) -> None:
    gw = run.gateway
    cycles = [e for e in run.events if e["event"] == "cycle"]
    assert [c["reason"] for c in cycles] == ["first", None, "distance", "tilt", "tilt", "fire", "interval"]
    sent = [c for c in cycles if c["reason"] is not None]
    world: dict[str, Any] = {"echo": True, "probe": True}
    reports = []
    for step, cycle in zip(STEPS, cycles, strict=True):
        world.update(step["sim"])
        if cycle["reason"] is not None:
            reports.append((dict(world), cycle))
    ups = gw.uplinks[: len(sent)]
    assert [u.fcnt for u in ups] == [c["fcnt"] for c in sent] == list(range(len(sent)))
    for (sim, cycle), uplink in zip(reports, ups, strict=True):
        assert uplink.fport == 10 and uplink.dev_eui == DevEui.from_hex(DEV_EUI)
        decoded = gw.profile.decode(10, uplink.payload, PARAMS).data
        expected = _expected(sim, cycle["echoes_us"])
        fill = decoded.pop("fill_level")
        assert decoded == expected, cycle
        if sim["echo"]:
            want = (1200 - expected["distance"]) / 1000 * 100
            assert fill == pytest.approx(min(100.0, max(0.0, want)), abs=0.05)


def test_class_a_downlink_is_verified_and_decrypted_by_the_firmware(run: Run) -> None:
    cycles = [e for e in run.events if e["event"] == "cycle" and e["reason"] is not None]
    assert run.gateway.downlink_sent is not None
    assert cycles[1]["downlink"] == {"fport": 10, "payload": "0e10", "fcnt": 0}
    assert [c["downlink"] for i, c in enumerate(cycles) if i != 1] == [None] * (len(cycles) - 1)


def test_frame_counter_resumes_at_the_stored_ceiling_after_a_reset(run: Run) -> None:
    reset = run.event("reset")
    # 6 uplinks used counters 0..5; flash holds the ceiling 16 (written once, at FCnt 0).
    assert reset == {"event": "reset", "fcnt_up": 16, "joined": True, "dev_nonce": 2}
    after = run.event("after_reset")
    assert after["fcnt"] == 16
    assert run.gateway.uplinks[6].fcnt == 16  # the gateway accepts the jump (no replay, within MAX_FCNT_GAP)
    # Writes: DevNonce x2, session, FCnt ceiling at 0, one downlink counter -> 5 before the reset.
    assert run.event("done")["writes_during_cycles"] == 5


def test_rejoin_after_reset_gets_a_new_session_and_counts_from_zero(run: Run) -> None:
    gw = run.gateway
    rejoined = run.event("rejoined")
    assert rejoined["ok"] and rejoined["fcnt_up"] == 0
    assert rejoined["dev_addr"] == gw.accepted[1].session.dev_addr.value.hex()
    assert gw.accepted[1].dev_nonce == 2
    last = gw.uplinks[-1]
    assert last.fcnt == 0 and last.session_tag == gw.accepted[1].session.session_tag


def test_duty_cycle_waits_are_taken_in_virtual_time(run: Run) -> None:
    # 1 % per sub-band (ETSI EN 300 220; RP002 §2.1.2): after a frame the node waited 99 x its airtime
    # before the next one *in the same sub-band* (868.0-868.6 MHz: the default channels; 865-868 MHz:
    # the CFList channels 867.x, a separate 1 % sub-band).
    assert run.event("done")["slept_ms"] > 0
    # Before the reset only: the band's busy time lives in RAM (not kept across a reset).
    tx = run.gateway.tx[:8]  # 2 join-requests + 6 reports
    by_band: dict[bool, list[dict[str, Any]]] = {}
    for msg in tx:
        assert msg["sf"] == 7
        by_band.setdefault(868_000_000 <= msg["freq_hz"] < 868_600_000, []).append(msg)
    for frames in by_band.values():
        for before, after in itertools.pairwise(frames):
            assert after["at_ms"] - before["at_ms"] >= 99 * 40  # a >= 20-byte frame at SF7 is > 40 ms on air
