"""Rate-limited logging of repeated refusals, so that a flood cannot flood the log.

Owns one thing: deciding whether a log line about a *reason* (a refusal counter
key such as ``bad_signature`` or ``datagram_too_large``) is written now. The first
occurrence of a reason in an interval is logged at the requested level; later
occurrences within the interval are counted and logged at DEBUG only; the next
occurrence after the interval first writes one summary line
(``... and N more <reason> in the last T s``) and then its own message. ``flush``
writes the summaries still pending (at shutdown, or from a periodic task), so a
flood that stops is still reported with its count.

Memory is bounded: at most ``max_reasons`` distinct reasons are tracked; any
further reason is folded into the reason ``other`` (its message is still the
caller's). It does not count refusals for metrics: the stages keep their own
counters; this only protects the log (an SD card and journald on a Pi).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

OTHER_REASON = "other"


@dataclass(slots=True)
class _ReasonState:
    logged_at_s: float  # clock value of the last line written for this reason
    suppressed: int = 0  # occurrences counted but not logged since logged_at_s
    total: int = 0  # every occurrence since this reason was first seen


class RateLimitedLog:
    """Logs the first occurrence of each reason per ``interval_s``, counts the rest.

    ``clock`` is injected for tests (``time.monotonic`` by default). Thread-safe,
    because paho's network thread may log a refusal before handing data to the loop.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_reasons: int = 256,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if max_reasons < 1:
            raise ValueError("max_reasons must be >= 1")
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._max_reasons = max_reasons
        self._reasons: dict[str, _ReasonState] = {}
        self._lock = threading.Lock()

    def warn(self, reason: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at WARNING unless ``reason`` was logged in this interval.

        Returns True when the message was written at WARNING.
        """
        return self.log(logging.WARNING, reason, msg, *args)

    def error(self, reason: str, msg: str, *args: object) -> bool:
        """As ``warn``, at ERROR."""
        return self.log(logging.ERROR, reason, msg, *args)

    def info(self, reason: str, msg: str, *args: object) -> bool:
        """As ``warn``, at INFO."""
        return self.log(logging.INFO, reason, msg, *args)

    def log(self, level: int, reason: str, msg: str, *args: object) -> bool:
        now_s = self._clock()
        summary: tuple[int, float] | None = None
        with self._lock:
            key = self._key(reason)
            state = self._reasons.get(key)
            if state is None:
                state = self._reasons[key] = _ReasonState(logged_at_s=now_s)
                write = True
            elif now_s - state.logged_at_s >= self._interval_s:
                if state.suppressed:
                    summary = (state.suppressed, now_s - state.logged_at_s)
                state.logged_at_s = now_s
                state.suppressed = 0
                write = True
            else:
                state.suppressed += 1
                write = False
            state.total += 1
        if summary is not None:
            self._write_summary(level, key, *summary)
        if write:
            self._logger.log(level, msg, *args)
        elif self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(msg, *args)
        return write

    def flush(self, level: int = logging.WARNING) -> int:
        """Write the pending summary of every reason; returns how many lines were written.

        Does not restart the intervals: the next occurrence of a flushed reason is
        logged only once its interval has passed.
        """
        now_s = self._clock()
        pending: list[tuple[str, int, float]] = []
        with self._lock:
            for key, state in self._reasons.items():
                if state.suppressed:
                    pending.append((key, state.suppressed, now_s - state.logged_at_s))
                    state.suppressed = 0
        for key, count, elapsed_s in pending:
            self._write_summary(level, key, count, elapsed_s)
        return len(pending)

    def total(self, reason: str) -> int:
        """Occurrences of ``reason`` seen so far (logged or not)."""
        with self._lock:
            state = self._reasons.get(reason)
            return state.total if state is not None else 0

    def totals(self) -> dict[str, int]:
        """Occurrences per reason seen so far (at most ``max_reasons`` + 1 keys)."""
        with self._lock:
            return {key: state.total for key, state in self._reasons.items()}

    def _key(self, reason: str) -> str:
        # Past the cap every new reason shares one slot: a caller that builds
        # reasons from untrusted input cannot grow this table without bound.
        if reason in self._reasons or len(self._reasons) < self._max_reasons:
            return reason
        return OTHER_REASON

    def _write_summary(self, level: int, key: str, count: int, elapsed_s: float) -> None:
        self._logger.log(level, "... and %d more %s in the last %.0f s", count, key, elapsed_s)
