"""What every model shares: the measurement value and the simulated calendar.

Simulated time ``t_s`` is seconds since local midnight of the scenario's first day, a Monday
(so ``weekday(t_s)`` is 0 on the first day). Models own no clock and no LoRaWAN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECONDS_PER_DAY = 86_400


def weekday(t_s: float) -> int:
    """0 = Monday ... 6 = Sunday (the scenario starts on a Monday)."""
    return int(t_s // SECONDS_PER_DAY) % 7


def hour_of_day(t_s: float) -> float:
    """Local hour as a float in [0, 24)."""
    return (t_s % SECONDS_PER_DAY) / 3600.0


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a device really measured (``values``, in its decoder's output keys) and its payload."""

    values: dict[str, Any]
    payload: bytes
    fport: int = 85
