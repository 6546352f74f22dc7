"""A scenario run: paced sending through Semtech UDP forwarders, simulated time, faults, truth.

Owns the loop that walks the schedule of ``simulator.city``: it moves the shared simulated
clock (``simulator.simclock``) to each frame's time, sends the frame through every packet
forwarder that heard it, waits for the PUSH_ACKs, then makes one PULL_DATA round trip so the
gateway has stamped the frame before the clock moves on (it stamps in the same callback that
acknowledges, just after the acknowledgement). Downlinks that arrive are decrypted and given
to the devices (a lamp follows a dim command). Control events stop and start the broker or
kill -9 and restart the agent through the hooks it was given; a clock jump moves the clock
the agent sees. Every frame is written to the ground truth, with the expectations at the end.

It does not build frames (``simulator.city``) nor decide what is expected (``simulator.truth``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.errors import FrameError
from gateway.lorawan import phy
from simulator.city import (
    ControlEvent,
    ScheduledFrame,
    SimDevice,
    apply_downlink,
    build_fleet,
    epoch_s,
    schedule,
)
from simulator.forwarder import PacketForwarder, frame_rxpk
from simulator.scenario import Scenario
from simulator.simclock import SharedClock
from simulator.truth import Expected, TruthBuilder

log = logging.getLogger(__name__)

_CHANNELS_HZ = (868_100_000, 868_300_000, 868_500_000)
_CLOCK_STEP_S = 0.05
"""While waiting for the next frame the simulated clock moves in steps of this many wall seconds."""
COPY_GAP_S = 0.3
"""Wall seconds between a frame and a copy of it (NbTrans, replay). The agent's de-duplication window
(200 ms of wall time) would otherwise merge them, which compressed time makes likely and the field never
does (a retransmission comes seconds later): the kept copy's timestamp would be the copy's."""


@dataclass
class Hooks:
    """What the runner may do to the gateway's world for control events (each optional)."""

    stop_broker: Callable[[], None] | None = None
    start_broker: Callable[[], None] | None = None
    kill_gateway: Callable[[], None] | None = None
    """kill -9 the agent (after the frames sent so far had ``settle_s`` to commit)."""
    start_gateway: Callable[[], None] | None = None
    """Start the agent again and return once it answers PULL_DATA."""
    settle_s: float = 0.5


@dataclass
class Summary:
    scenario: str
    seed: int
    simulated_s: float
    wall_s: float = 0.0
    frames: Counter[str] = field(default_factory=Counter)
    expect: Counter[str] = field(default_factory=Counter)
    datagrams: int = 0
    push_acks: int = 0
    no_push_acks: int = 0
    crc_error_copies: int = 0
    downlinks: int = 0
    joins: int = 0
    controls: Counter[str] = field(default_factory=Counter)
    expected: Expected | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "simulated_s": self.simulated_s,
            "wall_s": round(self.wall_s, 3),
            "frames": dict(sorted(self.frames.items())),
            "expect": dict(sorted(self.expect.items())),
            "datagrams": self.datagrams,
            "push_acks": self.push_acks,
            "no_push_acks": self.no_push_acks,
            "crc_error_copies": self.crc_error_copies,
            "downlinks": self.downlinks,
            "joins": self.joins,
            "controls": dict(self.controls),
        }

    def text(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.frames.items()))
        return (
            f"scenario {self.scenario} (seed {self.seed}): {self.simulated_s / 3600:.1f} h simulated "
            f"in {self.wall_s:.1f} s; frames: {kinds}; PUSH_ACK {self.push_acks}, "
            f"missing {self.no_push_acks}; downlinks {self.downlinks}"
        )


class _World:
    """The gateway's world during a run: clock offset, broker and agent up or down."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.clock_offset_s = 0.0
        self.gateway_down = False
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def due(self, t_s: float) -> None:
        """Run the restorations whose time has come (broker back, agent back, clock back)."""
        for item in sorted(p for p in self.pending if p[0] <= t_s):
            self.pending.remove(item)
            item[1]()

    def control(self, event: ControlEvent) -> None:
        fault, hooks = event.fault, self.hooks
        end_s = event.t_s + fault.duration_s
        if event.kind == "clock_jump":
            self.clock_offset_s += fault.jump_s
            self.pending.append((end_s, lambda: self._unjump(fault.jump_s)))
        elif event.kind == "broker_outage":
            if hooks.stop_broker is None or hooks.start_broker is None:
                raise RuntimeError("a broker_outage needs a broker the runner can stop and start")
            hooks.stop_broker()
            self.pending.append((end_s, hooks.start_broker))
        else:
            if hooks.kill_gateway is None or hooks.start_gateway is None:
                raise RuntimeError("a gateway_kill needs an agent process the runner can kill and start")
            time.sleep(hooks.settle_s)  # frames already acknowledged commit within the group-commit bound
            hooks.kill_gateway()
            self.gateway_down = True
            self.pending.append((end_s, self._restart))

    def _unjump(self, jump_s: float) -> None:
        self.clock_offset_s -= jump_s

    def _restart(self) -> None:
        assert self.hooks.start_gateway is not None
        self.hooks.start_gateway()
        self.gateway_down = False


def run(
    scenario: Scenario,
    target: tuple[str, int],
    *,
    speed: float | None = None,
    seed: int | None = None,
    truth: Path | None = None,
    gateway_eui: bytes = bytes.fromhex("b827ebfffe000001"),
    ack_timeout_s: float = 1.0,
    clock: SharedClock | None = None,
    rules_file: Path | None = None,
    hooks: Hooks | None = None,
) -> Summary:
    """Send the scenario's frames to ``target``, paced at ``speed`` simulated s per wall s."""
    pace = scenario.speed if speed is None else speed
    used_seed = scenario.seed if seed is None else seed
    fleet = build_fleet(scenario, used_seed)
    epoch = epoch_s(scenario)
    builder = TruthBuilder(fleet, epoch, rules_file, scenario.timezone)
    summary = Summary(scenario.name, used_seed, scenario.duration_s)
    world = _World(hooks or Hooks())
    out = truth.open("w", encoding="utf-8") if truth is not None else None
    euis = [(int.from_bytes(gateway_eui) + k).to_bytes(8) for k in range(scenario.radio.forwarders)]
    forwarders = [PacketForwarder(eui, target) for eui in euis]
    channel = random.Random(used_seed ^ 0xC4A)
    try:
        if out is not None:
            out.write(json.dumps(_header(scenario, used_seed, epoch, fleet, euis)) + "\n")
        started = time.monotonic()
        last_t_s = 0.0
        if clock is not None:
            clock.set(epoch)
        for forwarder in forwarders:  # the gateway learns where to send downlinks (PROTOCOL.TXT §5.2)
            forwarder.pull(ack_timeout_s)
        sent = 0
        last_sent: dict[bytes, tuple[int, float]] = {}  # DevEUI -> (counter, wall time) of its last frame
        for event in schedule(scenario, fleet, used_seed):
            _wait_until(started, last_t_s, event.t_s, pace, clock, epoch + world.clock_offset_s)
            last_t_s = event.t_s
            if clock is not None:
                clock.set(epoch + event.t_s + world.clock_offset_s)
            world.due(event.t_s)  # restorations (broker back, clock back) see this event's time
            if clock is not None:
                clock.set(epoch + event.t_s + world.clock_offset_s)
            if isinstance(event, ControlEvent):
                summary.controls[event.kind] += 1
                world.control(event)
                if out is not None:
                    out.write(json.dumps(event.truth()) + "\n")
                continue
            frame = event if not world.gateway_down else replace(event, receptions=())
            if frame.kind in ("retransmission", "replay") and frame.fcnt is not None:
                wall = last_sent.get(frame.dev_eui)
                if wall is not None and wall[0] == frame.fcnt:
                    time.sleep(max(0.0, wall[1] + COPY_GAP_S - time.monotonic()))
            elif frame.fcnt is not None:
                last_sent[frame.dev_eui] = (frame.fcnt, time.monotonic())
            _send(frame, forwarders, summary, channel, ack_timeout_s)
            sent += 1
            if clock is not None and not world.gateway_down:
                forwarders[0].pull(ack_timeout_s)  # the gateway has stamped the frame: the clock may move
            if sent % 50 == 0 and not world.gateway_down:
                for forwarder in forwarders[0 if clock is None else 1 :]:
                    forwarder.pull(ack_timeout_s)  # keep-alive, and collects their downlinks
            if frame.kind == "join" and not frame.lost and not world.gateway_down:
                summary.joins += _await_join(forwarders, fleet, frame, summary)
            summary.downlinks += _downlinks(forwarders, fleet, frame.t_s)
            summary.frames[frame.kind] += 1
            summary.expect[frame.expect] += 1
            builder.add(frame, world.clock_offset_s)
            if out is not None:
                doc = frame.truth()
                if world.clock_offset_s:
                    doc["clock_offset_s"] = world.clock_offset_s
                out.write(json.dumps(doc) + "\n")
        world.due(float("inf"))
        summary.wall_s = time.monotonic() - started
        summary.expected = builder.finish()
        if out is not None:
            out.write(json.dumps(summary.expected.as_json()) + "\n")
    finally:
        for forwarder in forwarders:
            forwarder.close()
        if out is not None:
            out.close()
    log.info("%s", summary.text())
    return summary


def _header(
    scenario: Scenario, seed: int, epoch: float, fleet: list[SimDevice], euis: list[bytes]
) -> dict[str, Any]:
    return {
        "type": "scenario",
        "name": scenario.name,
        "seed": seed,
        "duration_s": scenario.duration_s,
        "epoch_s": epoch,
        "timezone": scenario.timezone,
        "forwarders": [eui.hex() for eui in euis],
        "devices": [
            {
                "device": d.name,
                "dev_eui": d.device.dev_eui.hex(),
                "profile": d.device.profile,
                "site": d.site,
                "lat": d.lat_deg,
                "lon": d.lon_deg,
                "sf": d.sf,
            }
            for d in fleet
        ],
    }


def _wait_until(
    started: float, from_t_s: float, to_t_s: float, pace: float, clock: SharedClock | None, base: float
) -> None:
    """Sleep until ``to_t_s`` is due, moving the simulated clock along the way (never past it)."""
    for _ in range(1_000_000):
        remaining = started + to_t_s / pace - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, _CLOCK_STEP_S))
        if clock is not None:
            now_t = min(to_t_s, max(from_t_s, (time.monotonic() - started) * pace))
            clock.set(base + now_t)


def _send(
    frame: ScheduledFrame,
    forwarders: list[PacketForwarder],
    summary: Summary,
    channel: random.Random,
    ack_timeout_s: float,
) -> None:
    freq_hz = channel.choice(_CHANNELS_HZ)
    tokens: list[tuple[PacketForwarder, int]] = []
    for reception in frame.receptions:
        forwarder = forwarders[min(reception.forwarder, len(forwarders) - 1)]
        data = frame.phy_payload if reception.crc_ok else frame.corrupted
        rxpk = frame_rxpk(
            data,
            {
                "freq_hz": freq_hz,
                "sf": reception.sf,
                "rssi_dbm": reception.rssi_dbm,
                "snr_db": reception.snr_db,
                "crc_ok": reception.crc_ok,
            },
        )
        tokens.append((forwarder, forwarder.send_rxpk([rxpk])))
        summary.datagrams += 1
        summary.crc_error_copies += 0 if reception.crc_ok else 1
    for forwarder, token in tokens:
        if forwarder.wait_ack(token, ack_timeout_s):
            summary.push_acks += 1
        else:
            summary.no_push_acks += 1


_JOIN_WAIT_S = 3.0
"""How long a device waits for its join-accept (the agent answers at once; RX1 is 5 s later on air)."""


def _await_join(
    forwarders: list[PacketForwarder], fleet: list[SimDevice], frame: ScheduledFrame, summary: Summary
) -> int:
    """Wait for the join-accept of ``frame``'s device on any forwarder; 1 once the device joined."""
    device = next(d for d in fleet if d.name == frame.device)
    assert device.otaa is not None
    deadline = time.monotonic() + _JOIN_WAIT_S
    for _ in range(10_000):
        if time.monotonic() > deadline:
            break
        for forwarder in forwarders:
            resp = forwarder.wait_downlink(0.02)
            if resp is None:
                continue
            data = _txpk_bytes(resp.txpk)
            parsed = _parse(data) if data else None
            if isinstance(parsed, phy.JoinAccept):
                if device.otaa.accept(parsed, device.device):
                    return 1
            elif data and apply_downlink(fleet, frame.t_s, data) is not None:
                summary.downlinks += 1
    log.warning("no join-accept for %s at %.0f s", device.name, frame.t_s)
    return 0


def _parse(data: bytes) -> phy.PhyPayload | None:
    try:
        return phy.parse(data)
    except FrameError:
        return None


def _txpk_bytes(txpk: dict[str, Any]) -> bytes:
    data = txpk.get("data")
    if not isinstance(data, str):
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _downlinks(forwarders: list[PacketForwarder], fleet: list[SimDevice], t_s: float) -> int:
    """Take the PULL_RESPs already received, answer them (TX_ACK) and hand them to the devices."""
    n = 0
    for forwarder in forwarders:
        for _ in range(100):
            resp = forwarder.wait_downlink(0.0)
            if resp is None:
                break
            data = _txpk_bytes(resp.txpk)
            if data and apply_downlink(fleet, t_s, data) is not None:
                n += 1
    return n
