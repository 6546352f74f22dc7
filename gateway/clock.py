"""How much the gateway can trust its wall clock.

Owns the ``time_quality`` of a record (ARCHITECTURE.md §3.4): ``gps`` when the
packet forwarder stamped the frame with GPS time, ``ntp`` when the kernel says
the system clock is synchronised (adjtimex, as chrony/systemd-timesyncd set it),
``unsynced`` otherwise — a Raspberry Pi has no RTC and boots at a stale time.

Also owns the gateway's best estimate of the time for what must act on it (the
lighting schedules, docs/rules.md "When the clock is not trusted"): ``wall_time()``
gives a ``WallTime`` from, in order, GPS time from a concentrator's rxpk ``time``
(``note_gps``), NTP (the kernel's synchronised clock), and holdover (the last
trusted time plus the monotonic seconds since, for ``holdover_s``); otherwise the
system clock, marked ``unsynced``, with how long the time has not been trusted.

Holdover survives an agent restart within the same boot (a pushed configuration or an
update restarts the agent, and the NTP server may be gone by then): with a ``state_path``
the last trusted time, its monotonic seconds and the boot id are saved (at most every
``STATE_SAVE_EVERY_S`` while the time is trusted, and at stop with ``save_state``) and read
back at start if the boot id is the same. CLOCK_MONOTONIC counts from the boot, in every
process of that boot; after another boot the file is ignored (a Pi without RTC).

Correcting records stamped before synchronisation (with the monotonic clock) is
not done yet: they are marked ``unsynced`` and keep their monotonic stamp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from gateway.fsutil import write_atomic
from gateway.messages import TimeQuality

log = logging.getLogger(__name__)

# adjtimex(2): the return value is the clock state; TIME_ERROR means "not synchronised".
_TIME_ERROR = 5
_TIMEX_BYTES = 512  # larger than struct timex on every Linux ABI; modes = 0 means read only

NOT_BEFORE_S: Final = 1_735_689_600.0
"""2025-01-01T00:00Z, before this agent existed: a clock or a GPS time earlier than that is wrong
whatever else says (a Raspberry Pi without RTC boots at 1970 or at its last saved time)."""
HOLDOVER_S: Final = 72 * 3600.0
"""How long the last trusted time plus the monotonic clock is trusted: a free-running crystal
drifts at most about 100 ppm, 26 s in 72 h, well inside what a lighting schedule needs."""
GPS_FRESH_S: Final = 600.0
"""A GPS time from a received frame counts as a GPS source this long; then holdover carries it."""
CLOCK_STATE_FILE: Final = "clock-state.json"
"""In the data dir: the last trusted time, for holdover across an agent restart in the same boot."""
STATE_SAVE_EVERY_S: Final = 60.0
"""While the time is trusted the saved state is refreshed at most this often (a small file on an
SD card): an agent killed without its stop loses at most a minute, which holdover covers."""
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")

WallTimeQuality = Literal["gps", "ntp", "holdover", "unsynced"]


_provided = False


def read_boot_id() -> str | None:
    """This boot's random id (Linux, proc(5) ``boot_id``), None where there is none: then nothing
    is carried across a restart, since a monotonic time from an unknown boot means nothing."""
    try:
        text = BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def time_is_provided() -> None:
    """This process's ``time.time`` is a clock someone else keeps right (the simulator's shared
    clock, ``simulator.simclock``): trust it, whatever the kernel's synchronisation state says and
    whatever time the frames carry (their GPS time is simulated too, but the monotonic clock that
    would carry it forward is not)."""
    global _provided
    _provided = True


@dataclass(frozen=True, slots=True)
class WallTime:
    """The best estimate of the time now, and how far it can be trusted."""

    unix_s: float
    quality: WallTimeQuality
    untrusted_for_s: float = 0.0
    """Monotonic seconds since the time stopped being trusted (or since the start if it never
    was); 0 while it is trusted."""

    @property
    def trusted(self) -> bool:
        return self.quality != "unsynced"


class SystemClock:
    """Reads the kernel's synchronisation state, at most every ``recheck_s`` seconds, and keeps the
    best time estimate (``wall_time``), saved to ``state_path`` if given. ``wall``, ``mono``,
    ``probe`` and ``boot_id`` are injectable for tests.

    ``mono`` is CLOCK_MONOTONIC (``time.monotonic``), not CLOCK_BOOTTIME: the frames' GPS times
    come stamped with it (``note_gps``), and a gateway does not suspend (a Raspberry Pi cannot);
    on a host that did, holdover would lag by the time asleep, as it already does within a run.
    """

    def __init__(
        self,
        recheck_s: float = 10.0,
        *,
        wall: Callable[[], float] | None = None,
        mono: Callable[[], float] = time.monotonic,
        probe: Callable[[], bool] | None = None,
        holdover_s: float = HOLDOVER_S,
        state_path: Path | None = None,
        boot_id: Callable[[], str | None] = read_boot_id,
    ) -> None:
        self._recheck_s = recheck_s
        # Looked up at each call, not bound here: the simulator replaces time.time after imports.
        self._wall = wall if wall is not None else lambda: time.time()
        self._mono = mono
        self._holdover_s = holdover_s
        self._checked_mono = -recheck_s
        self._synced = False
        self._adjtimex = None
        self._probe_fn = probe
        self._started_mono = mono()
        self._trusted: tuple[float, float] | None = None  # (unix_s, mono_s) of the last trusted time
        self._gps: tuple[float, float] | None = None  # (unix_s, mono_s) of the last GPS time heard
        # Without a boot id a saved monotonic time cannot be checked: nothing is read or written.
        self._boot_id = boot_id() if state_path is not None else None
        self._state_path = state_path if self._boot_id is not None else None
        self._saved: tuple[float, float] | None = None  # what the file holds (written or read)
        self._saved_at_mono: float | None = None  # when it was last written (or tried)
        self._save_failed = False
        self._restore_state()
        if probe is not None:
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            self._adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            log.warning("adjtimex is not available: timestamps will be marked unsynced")

    def synced(self) -> bool:
        if _provided:
            return True
        now = self._mono()
        if now - self._checked_mono >= self._recheck_s:
            self._checked_mono = now
            self._synced = self._probe()
        return self._synced

    def note_gps(self, gps_time: str | None, at_mono_s: float) -> bool:
        """A frame's rxpk ``time`` (GPS time of reception, ISO 8601 UTC, only sent by a forwarder
        with a GPS fix; Semtech PROTOCOL.TXT §4) heard at monotonic ``at_mono_s``. True if used."""
        if not gps_time:
            return False
        try:
            stamp = datetime.fromisoformat(gps_time)
        except ValueError:
            return False
        if stamp.tzinfo is None or stamp.timestamp() < NOT_BEFORE_S:
            return False
        if self._gps is None or at_mono_s >= self._gps[1]:
            self._gps = (stamp.timestamp(), at_mono_s)
        return True

    def wall_time(self) -> WallTime:
        """The best time now: GPS, then NTP, then holdover, else the system clock ``unsynced``."""
        if _provided:
            return WallTime(self._wall(), "ntp")
        mono = self._mono()
        if self._gps is not None and 0 <= mono - self._gps[1] <= GPS_FRESH_S:
            estimate = self._gps[0] + (mono - self._gps[1])
            self._note_trusted(estimate, mono)
            return WallTime(estimate, "gps")
        wall = self._wall()
        if wall >= NOT_BEFORE_S and self.synced():
            self._note_trusted(wall, mono)
            return WallTime(wall, "ntp")
        if self._trusted is not None:
            elapsed_s = mono - self._trusted[1]
            if elapsed_s <= self._holdover_s:
                return WallTime(self._trusted[0] + elapsed_s, "holdover")
            return WallTime(wall, "unsynced", elapsed_s - self._holdover_s)
        return WallTime(wall, "unsynced", mono - self._started_mono)

    def save_state(self) -> None:
        """Save the last trusted time now, whatever the last save (at stop): the agent that starts
        next in this boot continues holdover from it. Nothing to do if it is already saved."""
        if _provided or self._state_path is None:
            return
        self.wall_time()  # GPS or NTP may be there now, and wall_time was maybe never called
        if self._trusted is not None and self._trusted != self._saved:
            self._write_state(self._trusted, self._mono())

    def _note_trusted(self, unix_s: float, mono_s: float) -> None:
        self._trusted = (unix_s, mono_s)
        if self._state_path is None:
            return
        if self._saved_at_mono is None or mono_s - self._saved_at_mono >= STATE_SAVE_EVERY_S:
            self._write_state(self._trusted, mono_s)

    def _write_state(self, trusted: tuple[float, float], now_mono_s: float) -> None:
        path = self._state_path
        if path is None:
            return
        # Tried or not, the next try waits: a read-only or full disk must not cost a write per tick.
        self._saved_at_mono = now_mono_s
        doc = {"boot_id": self._boot_id, "trusted_unix_s": trusted[0], "trusted_mono_s": trusted[1]}
        try:
            # Not durable: the state is only read back within the same boot (its boot id), and a
            # power cut starts another boot. Written from the rules tick: no fsync on the loop.
            write_atomic(path, json.dumps(doc).encode() + b"\n", durable=False)
        except OSError as exc:
            # Warned once: without the file, only a restart while the time is untrusted loses holdover.
            level = logging.DEBUG if self._save_failed else logging.WARNING
            log.log(level, "clock state not saved to %s: %s", path, exc)
            self._save_failed = True
            return
        self._saved = trusted

    def _restore_state(self) -> None:
        """Holdover from the state an agent of this boot saved; anything else is ignored."""
        if self._state_path is None:
            return
        try:
            data = self._state_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("clock state %s not read: %s", self._state_path, exc)
            return
        saved = _parse_state(data)
        if saved is None:
            log.warning("clock state %s is damaged: ignored", self._state_path)
            return
        boot_id, unix_s, mono_s = saved
        if boot_id != self._boot_id:
            log.info("clock state %s is from another boot: ignored", self._state_path)
            return
        if unix_s < NOT_BEFORE_S or not 0 <= mono_s <= self._mono():
            log.warning("clock state %s is impossible in this boot: ignored", self._state_path)
            return
        self._trusted = self._saved = (unix_s, mono_s)
        log.info(
            "last trusted time %s, %.0f s ago in this boot: holdover from it",
            iso_utc(unix_s), self._mono() - mono_s,
        )  # fmt: skip

    def _probe(self) -> bool:
        if self._probe_fn is not None:
            return self._probe_fn()
        if self._adjtimex is None:
            return False
        buf = ctypes.create_string_buffer(_TIMEX_BYTES)
        state = self._adjtimex(buf)
        return bool(state >= 0 and state != _TIME_ERROR)

    def quality(self, gps_time: str | None) -> TimeQuality:
        if gps_time:
            return "gps"
        return "ntp" if self.synced() else "unsynced"


def _parse_state(data: bytes) -> tuple[str, float, float] | None:
    """(boot id, trusted unix s, its monotonic s) from the state file, None if it is not that."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past the parser's depth
        return None
    if not isinstance(doc, dict):
        return None
    boot_id, unix_s, mono_s = doc.get("boot_id"), doc.get("trusted_unix_s"), doc.get("trusted_mono_s")
    if not isinstance(boot_id, str):
        return None
    numbers = []
    for value in (unix_s, mono_s):
        # float() first: an integer too large for a float is damage too, not an OverflowError later.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return boot_id, numbers[0], numbers[1]


def iso_utc(unix_s: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as records carry it."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
