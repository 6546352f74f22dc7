"""A small deterministic fleet and its traffic, including the frames a gateway must refuse.

Owns which devices exist (derived from a seed, so the demo, the tests and the
registry agree without sharing files) and the schedule of frames: good uplinks,
plus, when asked, a forged frame (wrong key: bad MIC), a replay of an earlier
frame, and a frame from a device the gateway does not know.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from simulator.devices import AbpDevice, Em310Container

FrameKind = Literal["good", "bad_mic", "replay", "unknown_device"]


@dataclass(frozen=True, slots=True)
class SimFrame:
    kind: FrameKind
    phy_payload: bytes
    dev_eui: bytes
    payload: bytes
    """The plaintext application payload (what the gateway should decode), empty for rejects."""
    fcnt: int | None = None
    """The 32-bit uplink counter of a good frame."""


@dataclass
class FleetMember:
    device: AbpDevice
    sensor: Em310Container


def make_fleet(count: int, seed: int = 1) -> list[FleetMember]:
    """``count`` EM310-UDL containers with keys and addresses derived from ``seed``."""
    rng = random.Random(seed)
    members = []
    for index in range(count):
        device = AbpDevice(
            dev_eui=bytes.fromhex("70b3d5e75e") + rng.randbytes(3),
            dev_addr=bytes([0x26, 0x01, 0x10, index & 0xFF]),
            nwk_s_key=rng.randbytes(16),
            app_s_key=rng.randbytes(16),
            profile="milesight/em310-udl",
        )
        sensor = Em310Container(rng=random.Random(rng.random()), distance_mm=rng.uniform(800, 2200))
        members.append(FleetMember(device, sensor))
    return members


def traffic(members: list[FleetMember], *, seed: int = 2, misbehave: bool = True) -> Iterator[SimFrame]:
    """An endless round-robin of uplinks; with ``misbehave``, every 10th frame is one to refuse."""
    rng = random.Random(seed)
    rogue = AbpDevice(
        dev_eui=bytes.fromhex("00000000deadbeef"),
        dev_addr=bytes.fromhex("26ffffff"),
        nwk_s_key=rng.randbytes(16),
        app_s_key=rng.randbytes(16),
        profile="milesight/em310-udl",
    )
    last_good: SimFrame | None = None
    count = 0
    while True:
        for member in members:
            count += 1
            if misbehave and count % 10 == 0 and last_good is not None:
                yield _misbehaving(count // 10, member, rogue, last_good, rng)
                continue
            payload = member.sensor.next_payload()
            fcnt = member.device.fcnt_up
            phy_payload = member.device.uplink(payload, member.sensor.fport)
            frame = SimFrame("good", phy_payload, member.device.dev_eui, payload, fcnt)
            last_good = frame
            yield frame


def _misbehaving(
    n: int, member: FleetMember, rogue: AbpDevice, last_good: SimFrame, rng: random.Random
) -> SimFrame:
    which = n % 3
    if which == 0:
        return SimFrame("replay", last_good.phy_payload, last_good.dev_eui, b"")
    if which == 1:
        forged = AbpDevice(
            dev_eui=member.device.dev_eui,
            dev_addr=member.device.dev_addr,
            nwk_s_key=rng.randbytes(16),
            app_s_key=member.device.app_s_key,
            profile=member.device.profile,
            fcnt_up=member.device.fcnt_up,
        )
        return SimFrame(
            "bad_mic", forged.uplink(member.sensor.next_payload(), 85), member.device.dev_eui, b""
        )
    return SimFrame("unknown_device", rogue.uplink(b"\x01\x75\x10", 85), rogue.dev_eui, b"")
