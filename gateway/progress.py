"""One line of progress for a long command (issue 19): in place on a terminal, plain lines when piped.

Owns how a long command (``edgegw radio test``, ``edgegw provision node``, ``edgegw-sim run``) says
what it is doing while it runs: on a terminal, one line on stderr rewritten in place (carriage
return, erase to the end of the line) a few times a second and erased at the end, so the command's
result prints on a clean screen; when stderr is not a terminal, whole lines without a carriage
return (grep-able in a log): one per step the command reports, else one every ``interval_s`` at
most. ``quiet`` writes nothing. It never writes to stdout: ``--json`` output is unchanged.

It does not own what the line says: the command gives ``describe(elapsed_s) -> str`` and tells when
its counts changed (``changed``) or a step ended (``step``). A ticker thread redraws the elapsed time
while the command waits in a blocking call (a socket read, a sleep); it only reads the command's
counters. Standard library only and cheap to import: the CLI starts lazily (tests/cli/test_start.py),
and the simulator uses it too (hence here and not under ``gateway.cli``, which it may not import).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

REFRESH_S = 0.25
"""On a terminal: the line is redrawn at most this often (and at least this often by the ticker)."""
INTERVAL_S = 5.0
"""When piped: at most one line per this many seconds, besides the steps."""
_ERASE = "\r\x1b[K"  # back to the first column, erase to the end of the line (ECMA-48 EL 0)


def duration_text(seconds: float) -> str:
    """``42 s``, ``3:07``, ``1:02:03``: short, and the same width while it counts."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The progress line of one command; use as a context manager around the long work."""

    def __init__(
        self,
        describe: Callable[[float], str],
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval_s: float = INTERVAL_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._describe = describe
        self._stream = sys.stderr if stream is None else stream
        self._quiet = quiet
        self._terminal = not quiet and _is_terminal(self._stream)
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._started = time.monotonic()
        self._last_write = float("-inf")
        self._lock = threading.Lock()  # the ticker and the command both write
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._shown = False

    def __enter__(self) -> Progress:
        if self._quiet:
            return self
        self._started = time.monotonic()
        self._write(force=True)
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def changed(self) -> None:
        """The counts changed: redraw on a terminal (at most every ``refresh_s``); piped, nothing."""
        if self._terminal:
            self._write(force=False)

    def step(self) -> None:
        """A step ended: redraw on a terminal, one line now when piped."""
        if not self._quiet:
            self._write(force=True)

    def close(self) -> None:
        """Stop the ticker; on a terminal erase the line (the command's result follows)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self._terminal and self._shown:
                self._stream.write(_ERASE)
                self._stream.flush()
                self._shown = False

    def _tick(self) -> None:
        period_s = self._refresh_s if self._terminal else min(self._interval_s, 1.0)
        while not self._stop.wait(period_s):
            self._write(force=False)

    def _write(self, *, force: bool) -> None:
        with self._lock:
            if self._stop.is_set() and not force:
                return
            now = time.monotonic()
            gap_s = self._refresh_s if self._terminal else self._interval_s
            if not force and now - self._last_write < gap_s:
                return
            self._last_write = now
            text = self._describe(now - self._started)
            try:
                if self._terminal:
                    # Cut to the width: a wrapped line could not be rewritten in place.
                    self._stream.write(_ERASE + text[: _columns(self._stream) - 1])
                    self._shown = True
                else:
                    self._stream.write(text + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: progress is not worth failing for
                self._quiet, self._terminal = True, False
                self._stop.set()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (OSError, ValueError):
        return False


def _columns(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80
    return max(20, columns) if columns > 0 else 80  # 0: a pty nobody sized (no window behind it)
