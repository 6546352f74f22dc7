"""The gateway's best time and its trust (gateway/clock.py ``SystemClock.wall_time``), on injected
clocks: a Raspberry Pi without RTC that boots at 1970 or at its last saved time, NTP that comes and
goes, a GPS-locked concentrator's rxpk ``time``. No sleeping."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import clock as clock_module
from gateway.clock import (
    CLOCK_STATE_FILE,
    GPS_FRESH_S,
    HOLDOVER_S,
    NOT_BEFORE_S,
    STATE_SAVE_EVERY_S,
    SystemClock,
)

REAL_S = datetime(2026, 12, 15, 20, 30, tzinfo=UTC).timestamp()  # 21:30 in Paris


class FakeHost:
    """A wall clock, a monotonic clock and the kernel's "synchronised" flag, all settable."""

    def __init__(self, wall_s: float, synced: bool = False) -> None:
        self.wall_s, self.mono_s, self.synced = wall_s, 1000.0, synced

    def advance(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds

    def clock(self, state_path: Path | None = None, boot_id: str = "boot-1") -> SystemClock:
        return SystemClock(
            0.0, wall=lambda: self.wall_s, mono=lambda: self.mono_s, probe=lambda: self.synced,
            state_path=state_path, boot_id=lambda: boot_id,
        )  # fmt: skip


def test_a_clock_never_synchronised_is_unsynced_and_says_for_how_long() -> None:
    host = FakeHost(wall_s=0.0)  # booted at 1970
    clock = host.clock()
    host.advance(120)
    now = clock.wall_time()
    assert (now.quality, now.trusted, now.untrusted_for_s) == ("unsynced", False, 120)


def test_a_wall_clock_before_2025_is_never_trusted_even_if_the_kernel_says_synchronised() -> None:
    host = FakeHost(wall_s=NOT_BEFORE_S - 86400, synced=True)
    assert host.clock().wall_time().quality == "unsynced"


def test_ntp_then_holdover_on_the_monotonic_clock_when_the_wall_clock_jumps() -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    clock = host.clock()
    first = clock.wall_time()
    assert (first.quality, first.unix_s) == ("ntp", REAL_S)
    host.synced = False
    host.advance(3600)
    host.wall_s -= 7 * 3600  # the wall clock steps back to a 7-hour-old saved time
    later = clock.wall_time()
    assert (later.quality, later.unix_s, later.trusted) == ("holdover", REAL_S + 3600, True)


def test_holdover_ends_and_the_untrusted_time_counts_from_its_end() -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    clock = host.clock()
    clock.wall_time()
    host.synced = False
    host.advance(HOLDOVER_S)
    assert clock.wall_time().quality == "holdover"
    host.advance(60)
    now = clock.wall_time()
    assert (now.quality, now.untrusted_for_s) == ("unsynced", 60)


def test_gps_time_of_a_received_frame_is_a_time_source_then_holdover() -> None:
    host = FakeHost(wall_s=0.0)  # no NTP, clock at 1970, but a GPS-locked concentrator
    clock = host.clock()
    assert clock.note_gps("2026-12-15T20:30:00.000000Z", at_mono_s=host.mono_s)
    host.advance(10)
    now = clock.wall_time()
    assert (now.quality, now.unix_s) == ("gps", REAL_S + 10)
    host.advance(GPS_FRESH_S)
    now = clock.wall_time()
    assert (now.quality, now.unix_s) == ("holdover", REAL_S + 10 + GPS_FRESH_S)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "2026-12-15T20:30:00", "1970-01-01T00:00:00Z", "2014-01-12 08:59:28 GMT"],
)
def test_a_time_that_cannot_be_a_gps_time_is_ignored(text: str) -> None:
    host = FakeHost(wall_s=0.0)
    clock = host.clock()
    assert not clock.note_gps(text, at_mono_s=host.mono_s)
    assert clock.wall_time().quality == "unsynced"


# --- holdover across an agent restart in the same boot (a pushed configuration, an update) ------


def _ntp_then_lost(host: FakeHost, state: Path) -> None:
    """An agent ran with NTP, NTP went away, the agent stopped (exit 75) and the wall clock jumped."""
    first = host.clock(state)
    assert first.wall_time().quality == "ntp"
    host.synced = False
    host.advance(600)
    first.save_state()
    host.advance(5)  # systemd starts the agent again
    host.wall_s = 0.0  # and the wall clock is no help (1970)


def test_a_restart_in_the_same_boot_continues_holdover_from_the_saved_trusted_time(tmp_path: Path) -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    state = tmp_path / CLOCK_STATE_FILE
    _ntp_then_lost(host, state)
    now = host.clock(state).wall_time()
    assert (now.quality, now.unix_s) == ("holdover", REAL_S + 605)


def test_a_restart_in_the_same_boot_still_ends_holdover_72_h_after_the_last_trusted_time(
    tmp_path: Path,
) -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    state = tmp_path / CLOCK_STATE_FILE
    _ntp_then_lost(host, state)
    host.advance(HOLDOVER_S - 605 + 60)
    now = host.clock(state).wall_time()
    assert (now.quality, now.untrusted_for_s) == ("unsynced", 60)


def test_a_state_saved_in_another_boot_is_ignored(tmp_path: Path) -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    state = tmp_path / CLOCK_STATE_FILE
    _ntp_then_lost(host, state)
    now = host.clock(state, boot_id="boot-2").wall_time()  # a reboot: the monotonic clock began again
    assert (now.quality, now.untrusted_for_s) == ("unsynced", 0)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[" * 100_000,
        b"[]",
        b'{"boot_id": "boot-1"}',
        b'{"boot_id": "boot-1", "trusted_unix_s": "x", "trusted_mono_s": 1000}',
        b'{"boot_id": "boot-1", "trusted_unix_s": 1e999, "trusted_mono_s": 1000}',
        b'{"boot_id": "boot-1", "trusted_unix_s": 1' + b"0" * 400 + b', "trusted_mono_s": 1000}',
        b'{"boot_id": "boot-1", "trusted_unix_s": true, "trusted_mono_s": 1000}',
        b'{"boot_id": 1, "trusted_unix_s": 1800000000, "trusted_mono_s": 1000}',
        b'{"boot_id": "boot-1", "trusted_unix_s": 1800000000, "trusted_mono_s": 99999}',  # ahead of now
        b'{"boot_id": "boot-1", "trusted_unix_s": 0, "trusted_mono_s": 1000}',  # 1970 was never trusted
    ],
)
def test_a_damaged_state_file_is_ignored_without_a_crash(tmp_path: Path, content: bytes) -> None:
    host = FakeHost(wall_s=0.0)
    state = tmp_path / CLOCK_STATE_FILE
    state.write_bytes(content)
    host.advance(60)
    now = host.clock(state).wall_time()
    assert (now.quality, now.untrusted_for_s) == ("unsynced", 0)


def test_an_absent_state_file_or_an_unknown_boot_is_unsynced_and_saves_nothing(tmp_path: Path) -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    state = tmp_path / CLOCK_STATE_FILE
    assert host.clock(state).wall_time().quality == "ntp"  # the file did not exist: no crash
    state.unlink()
    clock = SystemClock(0.0, wall=lambda: host.wall_s, mono=lambda: host.mono_s, probe=lambda: True,
                        state_path=state, boot_id=lambda: None)  # fmt: skip
    assert clock.wall_time().quality == "ntp"
    clock.save_state()
    assert not state.exists()  # a monotonic time from an unknown boot would mean nothing


def test_state_writes_are_at_most_one_a_minute_while_trusted_none_in_holdover_one_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[dict[str, object]] = []
    real_write = clock_module.write_atomic

    def counting_write(path: Path, data: bytes, mode: int = 0o640, *, durable: bool = True) -> None:
        writes.append(json.loads(data))
        real_write(path, data, mode, durable=durable)

    monkeypatch.setattr(clock_module, "write_atomic", counting_write)
    host = FakeHost(wall_s=REAL_S, synced=True)
    clock = host.clock(tmp_path / CLOCK_STATE_FILE)
    for _ in range(600):  # 10 min of ticks, one a second, NTP synchronised
        clock.wall_time()
        host.advance(1)
    assert len(writes) == 600 / STATE_SAVE_EVERY_S
    host.synced = False
    for _ in range(3600):  # 1 h of holdover: the last trusted time does not change, nothing to write
        assert clock.wall_time().quality == "holdover"
        host.advance(1)
    assert len(writes) == 600 / STATE_SAVE_EVERY_S
    clock.save_state()  # at stop: the trusted time of the last synchronised tick
    clock.save_state()  # already saved: nothing more
    assert len(writes) == 600 / STATE_SAVE_EVERY_S + 1
    assert writes[-1] == {"boot_id": "boot-1", "trusted_unix_s": REAL_S + 599, "trusted_mono_s": 1599.0}


def test_a_state_that_cannot_be_written_does_not_stop_the_clock(tmp_path: Path) -> None:
    host = FakeHost(wall_s=REAL_S, synced=True)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    clock = host.clock(blocker / CLOCK_STATE_FILE)  # its directory cannot be created
    assert clock.wall_time().quality == "ntp"
    host.synced = False
    host.advance(60)
    clock.save_state()
    assert clock.wall_time().quality == "holdover"
