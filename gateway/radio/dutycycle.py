"""EU868 duty-cycle accounting for the gateway's own transmissions (sans-IO: time is passed in).

Uses the EU868 sub-bands of ETSI EN 300 220-2 V3.1.1 (``gateway.eu868``, re-exported here)
and owns a sliding one-hour window of airtime spent per sub-band, the yes/no/when answer for
one more transmission, the choice between RX1 and RX2 when both are possible, and the budget
left per sub-band for health. It owns no radio, no clock and no sleeping: ``RadioBackend.transmit``
asks it, with the monotonic time, before every downlink.

Why per gateway: the duty cycle is "the share of transmit time per transmitter and per
sub-band" (domain.md §0.1), and the limit applies to the gateway too. RX1 downlinks go
out on the uplink channel (bands L/M, 1 %), RX2 and class C on 869.525 MHz (band P, 10 %).

"Per hour" is the usual reading of the ETSI percentages (1 % = 36 s/h): the window is
3600 s and slides, so a burst that used the budget frees it one hour after each
transmission started, not at the top of the clock hour.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

from gateway.eu868 import EU868_SUB_BANDS, WINDOW_S, SubBand, sub_band_for

__all__ = [
    "EU868_SUB_BANDS",
    "WINDOW_S",
    "Decision",
    "DutyCycle",
    "Spend",
    "SubBand",
    "Window",
    "pick_rx_window",
    "sub_band_for",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one transmission: allowed now, or when it would be (``wait_s``)."""

    allowed: bool
    band: SubBand | None
    wait_s: float = 0.0
    """Seconds until the budget allows it (inf when it never fits, e.g. longer than the budget)."""
    used_s: float = 0.0
    """Airtime already spent in the band's window at the time of the question."""

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        if self.band is None:
            return "frequency outside every EU868 sub-band"
        return (
            f"sub-band {self.band.name} budget: {self.used_s:.3f} s of {self.band.limit_s():.0f} s "
            f"used in the last hour, next slot in {self.wait_s:.1f} s"
        )


@dataclass(slots=True)
class Spend:
    """One transmission's airtime, kept until it leaves the window (``cancel`` gives it back)."""

    band: str
    start_s: float
    airtime_s: float


class DutyCycle:
    """Airtime spent per sub-band over a sliding window; all times are monotonic seconds."""

    def __init__(self, bands: tuple[SubBand, ...] = EU868_SUB_BANDS, window_s: float = WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.bands = bands
        self.window_s = window_s
        self._spent: dict[str, collections.deque[Spend]] = {b.name: collections.deque() for b in bands}
        self._used_s: dict[str, float] = {b.name: 0.0 for b in bands}

    def _expire(self, name: str, now_s: float) -> None:
        spent = self._spent[name]
        horizon = now_s - self.window_s + 1e-9  # a wait_s computed from start_s lands exactly here
        while spent and spent[0].start_s <= horizon:
            self._used_s[name] -= spent.popleft().airtime_s
        if not spent:
            self._used_s[name] = 0.0  # no float dust left behind

    def used_s(self, band: SubBand, now_s: float) -> float:
        self._expire(band.name, now_s)
        return max(self._used_s[band.name], 0.0)

    def check(self, freq_hz: int, airtime_s: float, now_s: float, bw_hz: int = 125_000) -> Decision:
        """May ``airtime_s`` be spent on ``freq_hz`` now? If not, when (``wait_s``)?"""
        band = sub_band_for(freq_hz, bw_hz, self.bands)
        if band is None:
            return Decision(False, None, float("inf"))
        limit = band.limit_s(self.window_s)
        used = self.used_s(band, now_s)
        if used + airtime_s <= limit + 1e-9:
            return Decision(True, band, 0.0, used)
        if airtime_s > limit:
            return Decision(False, band, float("inf"), used)
        # Walk the oldest spends until enough of them have left the window.
        freed = used
        for spend in self._spent[band.name]:
            freed -= spend.airtime_s
            if freed + airtime_s <= limit + 1e-9:
                return Decision(False, band, spend.start_s + self.window_s - now_s, used)
        return Decision(False, band, self.window_s, used)  # unreachable with consistent sums

    def record(self, freq_hz: int, airtime_s: float, now_s: float, bw_hz: int = 125_000) -> Spend | None:
        """Account for a transmission starting at ``now_s`` (None outside every sub-band)."""
        band = sub_band_for(freq_hz, bw_hz, self.bands)
        if band is None:
            return None
        self._expire(band.name, now_s)
        spend = Spend(band.name, now_s, airtime_s)
        self._spent[band.name].append(spend)
        self._used_s[band.name] += airtime_s
        return spend

    def cancel(self, spend: Spend) -> None:
        """Give back a recorded spend whose transmission did not happen (e.g. TX_ACK TOO_LATE)."""
        try:
            self._spent[spend.band].remove(spend)
        except ValueError:
            return  # already expired out of the window
        self._used_s[spend.band] -= spend.airtime_s

    def health(self, now_s: float) -> dict[str, dict[str, float]]:
        """Per sub-band: airtime ``used_s`` in the window, ``limit_s``, ``left_s``, ``left_pct``."""
        out: dict[str, dict[str, float]] = {}
        for band in self.bands:
            used = self.used_s(band, now_s)
            limit = band.limit_s(self.window_s)
            left = max(limit - used, 0.0)
            out[band.name] = {
                "used_s": round(used, 3),
                "limit_s": round(limit, 3),
                "left_s": round(left, 3),
                "left_pct": round(100.0 * left / limit, 2),
            }
        return out


Window = Literal["rx1", "rx2"]


def pick_rx_window(
    duty: DutyCycle,
    now_s: float,
    rx1: tuple[int, int, float] | None,
    rx2: tuple[int, int, float] | None,
) -> Window | None:
    """Choose the class A receive window to answer in, given ``(freq_hz, bw_hz, airtime_s)`` of each.

    Among the windows the duty cycle allows now, take the one that costs the smallest
    share of its own sub-band's hourly budget: RX1 at SF7 on 868.1 MHz (41 ms of a 36 s
    budget) beats RX2 at SF12 on 869.525 MHz (991 ms of 360 s), but an SF12 RX1 (2.8 %
    of band M) loses to the same SF12 in RX2 (0.28 % of band P), which is the "prefer RX2,
    the 10 % band" advice of domain.md §0.5 where it matters. Ties go to RX1 (earlier).
    None when neither fits.
    """
    best: tuple[float, Window] | None = None
    for name, option in (("rx1", rx1), ("rx2", rx2)):
        if option is None:
            continue
        freq_hz, bw_hz, airtime_s = option
        decision = duty.check(freq_hz, airtime_s, now_s, bw_hz)
        if not decision.allowed or decision.band is None:
            continue
        cost = airtime_s / decision.band.limit_s(duty.window_s)
        window: Window = "rx1" if name == "rx1" else "rx2"
        if best is None or cost < best[0]:
            best = (cost, window)
    return None if best is None else best[1]
