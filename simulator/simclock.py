"""A simulated wall clock shared by the simulator (which drives it) and the agent (which reads it).

Time compression: a week of city traffic in a few minutes is only meaningful if the agent's
``time.time()`` says what the simulated devices live through (its rules close Lden days at
local midnight, watch silences, run lighting schedules). The simulator writes the simulated
Unix time into a small memory-mapped file before each frame; the agent runs under
``python -m simulator.simclock CLOCK_FILE -- run --config ...``, which replaces ``time.time``
(and ``time.time_ns``) by a read of that file and then runs the ``edgegw`` command line. The
monotonic clock (asyncio timers, MQTT keep-alives) stays real.

File layout (little endian, 24 bytes): a sequence number, the simulated Unix time (float64)
and the sequence number again; a writer bumps the first before and the second after writing
(a seqlock), a reader retries while they differ. Only for tests and simulations: the agent in
the field reads the kernel's clock.

``--offset-s S`` makes one reader's clock run S seconds ahead of the file (behind if negative):
several gateways on one simulated clock, each off by the few milliseconds NTP leaves between
real ones (``simulator.gatewaylab``), so nothing can rely on two gateways reading the same time.
"""

from __future__ import annotations

import mmap
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from gateway import clock

_LAYOUT: Final = struct.Struct("<QdQ")
_SEQ: Final = struct.Struct("<Q")
_VALUE: Final = struct.Struct("<d")
_READ_TRIES: Final = 1000


class SharedClock:
    """The writer: ``set(unix_s)`` moves the clock every reader sees."""

    def __init__(self, path: Path, unix_s: float) -> None:
        path.write_bytes(_LAYOUT.pack(0, unix_s, 0))
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), _LAYOUT.size)
        self._seq = 0
        self.path = path
        self.now_s = unix_s

    def set(self, unix_s: float) -> None:
        self._seq += 1
        _SEQ.pack_into(self._map, 0, self._seq)
        _VALUE.pack_into(self._map, 8, unix_s)
        _SEQ.pack_into(self._map, 16, self._seq)
        self.now_s = unix_s

    def close(self) -> None:
        self._map.close()
        self._file.close()


def reader(path: Path, offset_s: float = 0.0) -> Callable[[], float]:
    """A ``time.time`` replacement reading the shared clock at ``path``, plus ``offset_s``."""
    file = path.open("rb")
    view = mmap.mmap(file.fileno(), _LAYOUT.size, access=mmap.ACCESS_READ)

    def now() -> float:
        for _ in range(_READ_TRIES):
            first, value, last = _LAYOUT.unpack_from(view, 0)
            if first == last:
                return float(value) + offset_s
        raise RuntimeError(f"simulated clock {path} keeps changing under the reader")

    return now


def install(path: Path, offset_s: float = 0.0) -> None:
    """Make this process's ``time.time`` and ``time.time_ns`` read the shared clock (plus ``offset_s``)."""
    now = reader(path, offset_s)
    time.time = now
    time.time_ns = lambda: int(now() * 1e9)
    clock.time_is_provided()  # lighting follows the shared clock, not the host's NTP state


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulator.simclock CLOCK_FILE [--offset-s S] [--] EDGEGW_ARGS...``: the agent on
    simulated time."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m simulator.simclock CLOCK_FILE [--offset-s S] [--] EDGEGW_ARGS..."
    if not args:
        print(usage, file=sys.stderr)
        return 2
    path, rest = Path(args[0]), args[1:]
    offset_s = 0.0
    if rest[:1] == ["--offset-s"]:
        try:
            offset_s = float(rest[1])
        except (IndexError, ValueError):
            print(usage, file=sys.stderr)
            return 2
        rest = rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    install(path, offset_s)
    from gateway.cli.main import main as edgegw_main  # imported after the clock is in place

    code: int = edgegw_main(rest)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
