"""De-duplication of one uplink heard several times (several packet forwarders, several antennas).

Owns the window in which identical PHYPayloads count as one transmission, and
the choice of the copy kept: the best RSSI, then the best SNR (its gateway gets
the class A downlink). Copies heard after the window closed are new frames to
the MAC layer, which refuses them as replays.

Sans-IO: ``add`` and ``due`` take the monotonic time as an argument; the caller
runs the timer (wake at ``next_due_s``). It does not parse frames.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from gateway.messages import RadioFrame

__all__ = ["Deduplicator", "HeardFrame"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeardFrame:
    """The best copy of one uplink and how many gateways heard it (LinkCheckAns GwCnt)."""

    frame: RadioFrame
    copies: int
    gateways: int


@dataclass(slots=True)
class _Group:
    best: RadioFrame
    due_s: float
    copies: int
    gateways: set[str | None]


def _better(a: RadioFrame, b: RadioFrame) -> bool:
    return (a.rx.rssi_dbm, a.rx.snr_db) > (b.rx.rssi_dbm, b.rx.snr_db)


class Deduplicator:
    """Groups identical PHYPayloads for ``window_s`` after the first copy, then releases the best one."""

    def __init__(self, window_s: float, *, max_open: int = 10_000) -> None:
        if window_s < 0:
            raise ValueError("window_s must not be negative")
        self._window_s = window_s
        self._max_open = max_open
        self._open: dict[bytes, _Group] = {}
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, frame: RadioFrame, now_s: float) -> list[HeardFrame]:
        """Take one copy; returns the groups that must be released at once (window 0, or too many open)."""
        key = frame.phy_payload
        group = self._open.get(key)
        if group is not None:
            group.copies += 1
            group.gateways.add(frame.rx.gateway_eui)
            self.counters["duplicates"] += 1
            if _better(frame, group.best):
                group.best = frame
            return []
        self._open[key] = _Group(frame, now_s + self._window_s, 1, {frame.rx.gateway_eui})
        self.counters["frames"] += 1
        if self._window_s == 0:
            return self.due(now_s)
        if len(self._open) > self._max_open:
            # Bounded memory under a flood: release the oldest group early.
            oldest = next(iter(self._open))
            self.counters["released_early"] += 1
            return [self._release(oldest)]
        return []

    def next_due_s(self) -> float | None:
        """When the oldest open group is due (insertion order is due order: one window for all)."""
        for group in self._open.values():
            return group.due_s
        return None

    def due(self, now_s: float) -> list[HeardFrame]:
        """Release every group whose window has closed, oldest first."""
        released = []
        while self._open:
            key, group = next(iter(self._open.items()))
            if group.due_s > now_s:
                break
            released.append(self._release(key))
        return released

    def _release(self, key: bytes) -> HeardFrame:
        group = self._open.pop(key)
        return HeardFrame(group.best, group.copies, len(group.gateways))
