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
from collections import Counter, OrderedDict
from dataclasses import dataclass

from gateway.messages import RadioFrame

MAX_SOURCES = 64
"""Gateway EUIs remembered for the single-forwarder shortcut (the radio backend remembers as many)."""

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

    def __init__(self, window_s: float, *, max_open: int = 10_000, sources_memory_s: float = 3600.0) -> None:
        if window_s < 0:
            raise ValueError("window_s must not be negative")
        self._window_s = window_s
        self._max_open = max_open
        self._open: dict[bytes, _Group] = {}
        self._sources: OrderedDict[str | None, float] = OrderedDict()
        """Packet forwarders (gateway EUIs) heard, with when last: the window is only worth its
        delay when a copy can come from another forwarder. One concentrator never sends an uplink
        twice (its antennas are merged into one rxpk), so with a single forwarder heard in the
        last ``sources_memory_s`` every frame is released at once: no 200 ms on every alert."""
        self._sources_memory_s = sources_memory_s
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
        if self._single_source(frame.rx.gateway_eui, now_s):
            self.counters["released_single_source"] += 1
            return [*self.due(now_s), self._release(key)]
        if len(self._open) > self._max_open:
            # Bounded memory under a flood: release the oldest group early.
            oldest = next(iter(self._open))
            self.counters["released_early"] += 1
            return [self._release(oldest)]
        return []

    def _single_source(self, gateway_eui: str | None, now_s: float) -> bool:
        # Least recently heard first: expiry stops at the first source still fresh, and a flood
        # of gateway EUIs costs O(1) per frame and at most MAX_SOURCES entries.
        sources = self._sources
        sources[gateway_eui] = now_s
        sources.move_to_end(gateway_eui)
        while len(sources) > MAX_SOURCES:
            sources.popitem(last=False)
        while len(sources) > 1:
            oldest, seen_s = next(iter(sources.items()))
            if now_s - seen_s <= self._sources_memory_s:
                break
            del sources[oldest]
        return len(sources) <= 1

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
