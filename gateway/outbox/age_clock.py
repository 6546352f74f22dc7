"""The outbox clock: seconds that only move forward, across restarts, for record ages.

Owns how old a buffered record is (``max_age_s`` of docs/outbox.md). A Raspberry Pi
has no RTC: at boot its wall clock may be years behind, or jump when NTP arrives,
so a wall-clock expiry (Azure edgeHub's TTL, research/peers.md §3.4) can drop a
whole buffer at once. The outbox clock is instead:

* while the agent runs: the monotonic clock (``time.monotonic``), which never jumps;
* across a restart: the value saved in the database at the last commit, plus the
  time the agent was down *as the wall clock measures it*, but only when that
  reading is plausible (0 ≤ down time ≤ ``max_credit_s``). A wall clock that went
  backwards, or forwards by more than the age bound, credits nothing and is logged:
  records then look younger than they are, so they are kept longer, never dropped
  early because of a bad clock.

It does not own any table (the outbox saves ``clock_s``/``wall_s`` pairs), nor
decide what to expire, nor how far the wall clock can be trusted (``gateway.clock``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    """Where the clock starts after a restart, and why."""

    base_s: float
    credited_down_s: float
    note: str


def restore(
    *,
    saved_clock_s: float | None,
    saved_wall_s: float | None,
    newest_record_s: float | None,
    wall_now_s: float,
    max_credit_s: float,
) -> Restored:
    """The clock value to start from (pure: every input is passed in)."""
    base = saved_clock_s or 0.0
    if saved_clock_s is None or saved_wall_s is None:
        credit, note = 0.0, "new outbox clock"
    else:
        down_s = wall_now_s - saved_wall_s
        if down_s < 0:
            credit, note = 0.0, f"wall clock is {-down_s:.0f} s behind the last save: no down time credited"
        elif down_s > max_credit_s:
            credit, note = (
                0.0,
                f"wall clock moved {down_s:.0f} s since the last save: implausible, not credited",
            )
        else:
            credit, note = down_s, f"{down_s:.0f} s of down time credited"
    base += credit
    # Never behind a committed record: ages must not go negative and created_s stays
    # non-decreasing along seq (expiry relies on it).
    if newest_record_s is not None and newest_record_s > base:
        base = newest_record_s
    return Restored(base, credit, note)


class OutboxClock:
    """``now_s()`` = restored base + monotonic time since this process started it."""

    def __init__(self, base_s: float, mono_clock: Callable[[], float]) -> None:
        self._base_s = base_s
        self._mono_clock = mono_clock
        self._mono0 = mono_clock()

    def now_s(self) -> float:
        return self._base_s + (self._mono_clock() - self._mono0)
