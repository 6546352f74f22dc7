"""When a simulated device may transmit: after its previous frame left the air, within its 1 %.

Owns the device side of the EU868 airtime rules for the simulator's schedule: a LoRa radio
sends one frame at a time, and a device may spend at most 1 % of each hour on the air in the
sub-band of its channels (ETSI EN 300 220-2 V3.1.1; 868.1/868.3/868.5 MHz all lie in sub-band
M, 868.0-868.6 MHz: 36 s per hour; research/domain.md §0.1). A frame due earlier than that
goes out at the first allowed time (what LoRaMac-node does with a frame queued during its
band's off-time).

The formulas are the gateway's: ``gateway.radio.airtime`` (time on air of a PHYPayload) and
``gateway.radio.dutycycle`` (a sliding one-hour window per sub-band). It owns no schedule
(``simulator.city`` asks it) and no clock (times are simulated seconds).
"""

from __future__ import annotations

from typing import Final

from gateway.radio.airtime import LoraParams, airtime_s
from gateway.radio.dutycycle import DutyCycle

CHANNEL_HZ: Final = 868_100_000
"""Where the accounting books a frame: the runner picks one of the three default channels at
random, and all three are in sub-band M (one budget)."""
_MAX_STEPS: Final = 10_000


def frame_airtime_s(phy_bytes: int, sf: int) -> float:
    """Time on air of an uplink of ``phy_bytes`` at ``sf``, 125 kHz, 4/5, explicit header, CRC."""
    return airtime_s(phy_bytes, LoraParams(sf=sf))


class TxGate:
    """One device's radio: the end of its last frame on air and its airtime in the last hour."""

    def __init__(self) -> None:
        self._duty = DutyCycle()
        self.free_s = 0.0
        """The device's radio is busy until then (the end of the last frame it booked)."""

    def book(self, due_s: float, airtime: float) -> float:
        """The first time at or after ``due_s`` the frame may start; it is booked from then.

        Frames must be booked in the order the device sends them (each one starts after the
        previous one ends, so the window's spends stay sorted by start time).
        """
        start_s = max(due_s, self.free_s)
        for _ in range(_MAX_STEPS):
            decision = self._duty.check(CHANNEL_HZ, airtime, start_s)
            if decision.allowed:
                break
            if decision.wait_s == float("inf"):
                raise ValueError(f"a {airtime:.3f} s frame never fits a 1 % hour")
            start_s += decision.wait_s
        self._duty.record(CHANNEL_HZ, airtime, start_s)
        self.free_s = start_s + airtime
        return start_s
