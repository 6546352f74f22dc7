"""How much the gateway can trust its wall clock.

Owns the ``time_quality`` of a record (ARCHITECTURE.md §3.4): ``gps`` when the
packet forwarder stamped the frame with GPS time, ``ntp`` when the kernel says
the system clock is synchronised (adjtimex, as chrony/systemd-timesyncd set it),
``unsynced`` otherwise — a Raspberry Pi has no RTC and boots at a stale time.

Correcting records stamped before synchronisation (with the monotonic clock) is
not done yet: they are marked ``unsynced`` and keep their monotonic stamp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from datetime import UTC, datetime

from gateway.messages import TimeQuality

log = logging.getLogger(__name__)

# adjtimex(2): the return value is the clock state; TIME_ERROR means "not synchronised".
_TIME_ERROR = 5
_TIMEX_BYTES = 512  # larger than struct timex on every Linux ABI; modes = 0 means read only


class SystemClock:
    """Reads the kernel's synchronisation state, at most every ``recheck_s`` seconds."""

    def __init__(self, recheck_s: float = 10.0) -> None:
        self._recheck_s = recheck_s
        self._checked_mono = -recheck_s
        self._synced = False
        self._adjtimex = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            self._adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            log.warning("adjtimex is not available: timestamps will be marked unsynced")

    def synced(self) -> bool:
        now = time.monotonic()
        if now - self._checked_mono >= self._recheck_s:
            self._checked_mono = now
            self._synced = self._probe()
        return self._synced

    def _probe(self) -> bool:
        if self._adjtimex is None:
            return False
        buf = ctypes.create_string_buffer(_TIMEX_BYTES)
        state = self._adjtimex(buf)
        return bool(state >= 0 and state != _TIME_ERROR)

    def quality(self, gps_time: str | None) -> TimeQuality:
        if gps_time:
            return "gps"
        return "ntp" if self.synced() else "unsynced"


def iso_utc(unix_s: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as records carry it."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
