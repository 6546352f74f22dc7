"""What a command to a class C multicast group costs on the air, against one downlink per member.

Owns the arithmetic ``edgegw rules test`` prints for each lighting step addressed to a group: the
frame's PHYPayload size (MHDR 1 + McAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 + FRMPayload + MIC 4, no
FOpts), its time on air at the group's data rate (``gateway.radio.airtime``, no PHY CRC: LoRaWAN
downlinks have none), and the share of the sub-band's hourly budget (``gateway.eu868``: 10 % of the
hour at 869.525 MHz) that one frame takes, against the same frame sent to each member in turn (what
class C unicast would send: the same size, a DevAddr in place of the McAddr).

It lives in the CLI because it joins two stages (radio airtime, LoRaWAN data rates). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.eu868 import WINDOW_S, sub_band_for
from gateway.lorawan import region
from gateway.radio.airtime import LoraParams, airtime_ms

_OVERHEAD_BYTES = 13
"""MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 + MIC 4 (LoRaWAN 1.0.4 §4)."""


@dataclass(frozen=True, slots=True)
class StepCost:
    group: str
    members: int
    payload_bytes: int
    dr: int
    freq_hz: int
    frame_ms: float
    """One multicast frame's time on air."""
    budget_s: float | None
    """The sub-band's transmit time per hour (None: the frequency is in no sub-band)."""

    @property
    def phy_bytes(self) -> int:
        return self.payload_bytes + _OVERHEAD_BYTES

    @property
    def unicast_ms(self) -> float:
        return self.frame_ms * self.members

    def share_pct(self, airtime_ms_: float) -> float | None:
        if self.budget_s is None:
            return None
        return 100.0 * airtime_ms_ / 1000.0 / self.budget_s

    def as_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "members": self.members,
            "payload_bytes": self.payload_bytes,
            "phy_bytes": self.phy_bytes,
            "dr": self.dr,
            "freq_hz": self.freq_hz,
            "multicast_ms": round(self.frame_ms, 1),
            "unicast_ms": round(self.unicast_ms, 1),
            "multicast_budget_pct": _round(self.share_pct(self.frame_ms)),
            "unicast_budget_pct": _round(self.share_pct(self.unicast_ms)),
        }

    def describe(self) -> str:
        """One line: the frame, its airtime and budget share, against one frame per member."""
        multicast_pct, unicast_pct = self.share_pct(self.frame_ms), self.share_pct(self.unicast_ms)
        text = (
            f"group {self.group}: one {self.phy_bytes}-byte frame at DR{self.dr} of {self.frame_ms:.0f} ms "
            f"instead of {self.members} = {self.unicast_ms / 1000:.1f} s"
        )
        if multicast_pct is None or unicast_pct is None:
            return text + f" ({self.freq_hz / 1e6:.3f} MHz is in no EU868 sub-band)"
        return (
            f"{text}: {multicast_pct:.2f} % of the {self.freq_hz / 1e6:.3f} MHz sub-band's hourly budget "
            f"instead of {unicast_pct:.1f} %"
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def step_cost(group: str, members: int, payload_bytes: int, dr: int, freq_hz: int) -> StepCost:
    rate = region.data_rate(dr)
    frame_ms = airtime_ms(
        payload_bytes + _OVERHEAD_BYTES, LoraParams(sf=rate.sf, bw_hz=rate.bw_hz, crc=False)
    )
    band = sub_band_for(freq_hz, rate.bw_hz)
    return StepCost(
        group, members, payload_bytes, dr, freq_hz, frame_ms, band.limit_s(WINDOW_S) if band else None
    )
