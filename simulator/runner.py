"""A scenario run: paced sending through a transport, simulated time, faults, downlinks, truth.

Owns the loop that walks the schedule of ``simulator.city``: it moves the shared simulated
clock (``simulator.simclock``) to each frame's time, delivers the frame through a transport
(``simulator.transports``: Semtech UDP forwarders, a serial modem on a pty, an emulated SX127x),
then waits for the transport's ``sync`` so the gateway has stamped the frame before the clock
moves on (with Semtech UDP: the PUSH_ACKs, then one PULL_DATA round trip; the gateway stamps in
the same callback that acknowledges, just after the acknowledgement). Downlinks that arrive are
dropped with probability ``radio.downlink_loss`` (seeded), else decrypted and given to the
devices (a join-accept, a lamp's dim command); after a confirmed uplink the runner waits for
the device's downlink. Control events stop and start the broker or
kill -9 and restart the agent through the hooks it was given; a clock jump moves the clock
the agent sees. Every frame is written to the ground truth, with the expectations at the end.

It does not build frames (``simulator.city``) nor decide what is expected (``simulator.truth``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.errors import FrameError, MicMismatch
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
from simulator.scenario import Scenario
from simulator.simclock import SharedClock
from simulator.transports import Transport, open_transport
from simulator.truth import Expected, TruthBuilder

log = logging.getLogger(__name__)

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
    """Start the agent again and return once it is ready to receive (transport's ``ready_probe``)."""
    kill_gateway_at: Callable[[int], None] | None = None
    """kill -9 the agent of gateway ``index`` alone (a scenario with ``gateways``, a ``gateway_kill``
    naming one): the receptions of its forwarder are dropped while it is down, the others go on."""
    start_gateway_at: Callable[[int], None] | None = None
    """Start that agent again and return once it is ready to receive."""
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
    downlinks_lost: int = 0
    """Downlinks (join-accepts included) dropped on the way down (``radio.downlink_loss``)."""
    joins: int = 0
    transport: str = "semtech-udp"
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
            "downlinks_lost": self.downlinks_lost,
            "joins": self.joins,
            "transport": self.transport,
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

    def __init__(self, hooks: Hooks, gateway_ids: tuple[str, ...] = ()) -> None:
        self.hooks = hooks
        self.gateway_ids = gateway_ids
        self.clock_offset_s = 0.0
        self.gateway_down = False
        self.gateways_down: set[int] = set()
        """Indices (scenario ``gateways``) of the gateways killed one by one and not back yet."""
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def due(self, t_s: float) -> None:
        """Run the restorations whose time has come (broker back, agent back, clock back)."""
        # By time only: two restorations due at once (a gateway and the broker) must not compare callables.
        for item in sorted((p for p in self.pending if p[0] <= t_s), key=lambda p: p[0]):
            self.pending.remove(item)
            item[1]()

    def control(self, event: ControlEvent) -> None:
        fault, hooks = event.fault, self.hooks
        end_s = event.t_s + fault.duration_s
        if event.kind in ("clock_jump", "clock_set"):  # a clock_set's jump_s is computed (city.schedule)
            self.clock_offset_s += fault.jump_s
            self.pending.append((end_s, lambda: self._unjump(fault.jump_s)))
        elif event.kind == "broker_outage":
            if hooks.stop_broker is None or hooks.start_broker is None:
                raise RuntimeError("a broker_outage needs a broker the runner can stop and start")
            hooks.stop_broker()
            self.pending.append((end_s, hooks.start_broker))
        elif fault.gateway is not None:
            if hooks.kill_gateway_at is None or hooks.start_gateway_at is None:
                raise RuntimeError("a gateway_kill of one gateway needs agents the runner can kill and start")
            index = self.gateway_ids.index(fault.gateway)
            time.sleep(hooks.settle_s)  # as below: what it acknowledged is committed first
            hooks.kill_gateway_at(index)
            self.gateways_down.add(index)
            self.pending.append((end_s, lambda: self._restart_one(index)))
        else:
            if hooks.kill_gateway is None or hooks.start_gateway is None:
                raise RuntimeError("a gateway_kill needs an agent process the runner can kill and start")
            time.sleep(hooks.settle_s)  # frames already acknowledged commit within the group-commit bound
            hooks.kill_gateway()
            self.gateway_down = True
            self.pending.append((end_s, self._restart))

    def _unjump(self, jump_s: float) -> None:
        self.clock_offset_s -= jump_s

    def _restart_one(self, index: int) -> None:
        assert self.hooks.start_gateway_at is not None
        self.hooks.start_gateway_at(index)
        self.gateways_down.discard(index)

    def _restart(self) -> None:
        assert self.hooks.start_gateway is not None
        self.hooks.start_gateway()
        self.gateway_down = False


def run(
    scenario: Scenario,
    target: tuple[str, int] | str | Transport,
    *,
    speed: float | None = None,
    seed: int | None = None,
    truth: Path | None = None,
    gateway_eui: bytes = bytes.fromhex("b827ebfffe000001"),
    ack_timeout_s: float = 1.0,
    clock: SharedClock | None = None,
    rules_file: Path | None = None,
    hooks: Hooks | None = None,
    on_event: Callable[[float, Summary], None] | None = None,
) -> Summary:
    """Send the scenario's frames to ``target``, paced at ``speed`` simulated s per wall s.

    ``target``: ``(host, port)`` or a ``--target`` text (``semtech-udp://HOST:PORT``, ``HOST:PORT``,
    ``serial://PATH``, ``sx127x-bridge://SOCKET``; opened and closed here), or a transport the
    caller opened (and closes). ``on_event(t_s, summary)`` is called after each frame and control event
    (simulated seconds since the start, the counts so far): for a progress line, it must be quick.
    """
    pace = scenario.speed if speed is None else speed
    used_seed = scenario.seed if seed is None else seed
    fleet = build_fleet(scenario, used_seed)
    epoch = epoch_s(scenario)
    builder = TruthBuilder(fleet, epoch, rules_file, scenario.timezone)
    summary = Summary(scenario.name, used_seed, scenario.duration_s)
    world = _World(hooks or Hooks(), tuple(g.gateway_id for g in scenario.gateways))
    out = truth.open("w", encoding="utf-8") if truth is not None else None
    if scenario.gateways:  # each gateway's forwarder has its gateway's EUI (consecutive: simulator.coverage)
        gateway_eui = scenario.gateways[0].eui
    euis = [(int.from_bytes(gateway_eui) + k).to_bytes(8) for k in range(scenario.radio.forwarders)]
    owned = isinstance(target, (tuple, str))
    transport = (
        open_transport(
            target, gateway_eui=gateway_eui, forwarders=scenario.radio.forwarders, ack_timeout_s=ack_timeout_s
        )
        if isinstance(target, (tuple, str))
        else target
    )
    summary.transport = transport.name
    down = _DownlinkPath(transport, fleet, scenario.radio.downlink_loss, used_seed, summary)
    try:
        if out is not None:
            out.write(json.dumps(_header(scenario, used_seed, epoch, fleet, euis)) + "\n")
        started = time.monotonic()
        last_t_s = 0.0
        if clock is not None:
            clock.set(epoch)
        transport.open(used_seed)
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
                if on_event is not None:
                    on_event(event.t_s, summary)
                continue
            frame = event if not world.gateway_down else replace(event, receptions=())
            if world.gateways_down:  # a dead gateway's forwarder hears nothing; the others still do
                kept = tuple(r for r in frame.receptions if r.forwarder not in world.gateways_down)
                frame = replace(frame, receptions=kept)
            if frame.kind in ("retransmission", "replay") and frame.fcnt is not None:
                wall = last_sent.get(frame.dev_eui)
                if wall is not None and wall[0] == frame.fcnt:
                    time.sleep(max(0.0, wall[1] + COPY_GAP_S - time.monotonic()))
            elif frame.fcnt is not None:
                last_sent[frame.dev_eui] = (frame.fcnt, time.monotonic())
            _deliver(transport, frame, summary)
            sent += 1
            if clock is not None and not world.gateway_down:
                transport.sync()  # the gateway has stamped the frame: the clock may move
            if sent % 50 == 0 and not world.gateway_down:
                transport.keepalive(clock is not None)
            if frame.kind == "join" and not frame.lost and not world.gateway_down:
                summary.joins += down.await_join(frame)
            elif frame.confirmed and not frame.lost and not world.gateway_down:
                down.await_ack(frame)
            down.collect(frame.t_s)
            summary.frames[frame.kind] += 1
            summary.expect[frame.expect] += 1
            builder.add(frame, world.clock_offset_s)
            if out is not None:
                doc = frame.truth()
                if world.clock_offset_s:
                    doc["clock_offset_s"] = world.clock_offset_s
                out.write(json.dumps(doc) + "\n")
            if on_event is not None:
                on_event(frame.t_s, summary)
        world.due(float("inf"))
        summary.wall_s = time.monotonic() - started
        summary.expected = builder.finish()
        if out is not None:
            out.write(json.dumps(summary.expected.as_json()) + "\n")
    finally:
        if owned:
            transport.close()
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
        **(
            {"gateways": [{"id": g.gateway_id, "lat": g.lat_deg, "lon": g.lon_deg, "eui": g.eui.hex()}
                          for g in scenario.gateways]}
            if scenario.gateways
            else {}
        ),
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


def _deliver(transport: Transport, frame: ScheduledFrame, summary: Summary) -> None:
    delivery = transport.deliver(frame)
    summary.datagrams += delivery.sent
    summary.push_acks += delivery.acked
    summary.no_push_acks += delivery.unacked
    summary.crc_error_copies += delivery.crc_error_copies


class _DownlinkPath:
    """Downlinks from the transport: lost with ``radio.downlink_loss`` (seeded), else given to the devices."""

    def __init__(
        self, transport: Transport, fleet: list[SimDevice], loss: float, seed: int, summary: Summary
    ) -> None:
        self.transport, self.fleet, self.loss, self.summary = transport, fleet, loss, summary
        self._rng = random.Random(seed ^ 0xD0A1)  # drawn only when loss > 0: old scenarios unchanged

    def _lost(self) -> bool:
        if self.loss <= 0 or self._rng.random() >= self.loss:
            return False
        self.summary.downlinks_lost += 1
        return True

    def _apply(self, t_s: float, data: bytes) -> str | None:
        """Give one downlink to the fleet unless it is lost; the device it was for (a multicast frame: its
        group's first member), or None."""
        parsed = _parse(data)
        name: str | None = None  # a join-accept names its device only once opened (city.apply_downlink)
        if isinstance(parsed, phy.DataFrame) and not parsed.uplink:
            target = next((d for d in self.fleet if d.device.dev_addr == parsed.dev_addr), None)
            if target is not None:
                name = target.name
            elif not self._group_frame(parsed.dev_addr):
                return None
            # A multicast frame (its DevAddr a group's McAddr) goes to every member (city.apply_downlink);
            # lost, it is lost for all of them: one draw per frame, as for a unicast downlink.
        elif not isinstance(parsed, phy.JoinAccept):
            return None
        if self._lost():
            return name
        return self._give(t_s, data) or name

    def _group_frame(self, dev_addr: bytes) -> bool:
        """Whether ``dev_addr`` is the McAddr of a multicast group a device of the fleet is a member of."""
        return any(member.mc_addr == dev_addr for d in self.fleet for member in d.multicast)

    def _give(self, t_s: float, data: bytes) -> str | None:
        name = apply_downlink(self.fleet, t_s, data)
        if name is not None:
            self.summary.downlinks += 1
        return name

    def collect(self, t_s: float) -> None:
        """Take the downlinks already there (Semtech: answered with TX_ACK) and hand them to the devices."""
        for data in self.transport.downlinks(0.0):
            self._apply(t_s, data)

    def await_join(self, frame: ScheduledFrame) -> int:
        """Wait for the join-accept of ``frame``'s device; 1 once the device joined."""
        device = next(d for d in self.fleet if d.name == frame.device)
        assert device.otaa is not None
        deadline = time.monotonic() + self.transport.join_wait_s
        for _ in range(10_000):
            if time.monotonic() > deadline:
                break
            for data in self.transport.downlinks(0.02):
                parsed = _parse(data)
                if not isinstance(parsed, phy.JoinAccept) or not _opens(parsed, device.otaa.app_key):
                    self._apply(frame.t_s, data)  # not this device's join-accept
                elif self._lost():
                    # It never hears its accept and joins again 1-3 min later (city.schedule).
                    log.info("join-accept for %s lost on the way down at %.0f s", device.name, frame.t_s)
                    return 0
                elif device.otaa.accept(parsed, device.device):
                    return 1
        log.warning("no join-accept for %s at %.0f s", device.name, frame.t_s)
        return 0

    def await_ack(self, frame: ScheduledFrame) -> bool:
        """After a confirmed uplink: wait for a downlink to the device (its ACK); True when one came."""
        deadline = time.monotonic() + self.transport.downlink_wait_s
        for _ in range(10_000):
            if time.monotonic() > deadline:
                break
            for data in self.transport.downlinks(0.02):
                if self._apply(frame.t_s, data) == frame.device:
                    return True
        log.warning("no downlink after the confirmed uplink of %s at %.0f s", frame.device, frame.t_s)
        return False


def _opens(accept: phy.JoinAccept, app_key: bytes) -> bool:
    """The join-accept was encrypted with this AppKey (its MIC verifies)."""
    try:
        phy.open_join_accept(accept, app_key)
    except MicMismatch:
        return False
    return True


def _parse(data: bytes) -> phy.PhyPayload | None:
    try:
        return phy.parse(data)
    except FrameError:
        return None
