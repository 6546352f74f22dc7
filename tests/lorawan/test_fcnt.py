"""Tests of the 32-bit uplink counter reconstruction (gateway.lorawan.fcnt).

Rules: LoRaWAN 1.0.4 §4.3.1.5 (a 32-bit FCntUp of which FHDR carries the low 16
bits); LoRaWAN 1.0.3 §4.3.1.5 (the receiver keeps its counter in sync while the
difference, after rollover, stays below MAX_FCNT_GAP), 16384 as stated on the
ChirpStack forum thread "Uplink FCnt 32 bits" (forum.chirpstack.io/t/3459). The
accept / replay / gap / exhaustion split is edgegw's own contract for sessions.
"""

from __future__ import annotations

import pytest

from gateway.errors import FrameError, ReplayedFrame
from gateway.lorawan.fcnt import MAX_FCNT_GAP, full_fcnt

ACCEPTED = [
    # (name, fcnt16, last, expected 32-bit counter)
    ("first frame of a session", 0, None, 0),
    ("first frame is taken at face value", 0x1234, None, 0x1234),
    ("next frame", 6, 5, 6),
    ("a few frames lost", 10, 5, 10),
    ("high half is kept", 0x0010, 0x0003_0005, 0x0003_0010),
    ("rollover 0xffff -> 0x10000", 0x0000, 0xFFFF, 0x1_0000),
    ("rollover with frames lost across it", 0x0005, 0xFFF0, 0x1_0005),
    ("rollover of a high half", 0x0001, 0x0007_FFFF, 0x0008_0001),
    ("gap exactly max, no rollover", MAX_FCNT_GAP, 0, MAX_FCNT_GAP),
    ("gap exactly max, across rollover", (0xFFFF + MAX_FCNT_GAP) & 0xFFFF, 0xFFFF, 0xFFFF + MAX_FCNT_GAP),
    ("last possible counter", 0xFFFF, 0xFFFF_FFFE, 0xFFFF_FFFF),
]


@pytest.mark.parametrize(
    ("fcnt16", "last", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted(fcnt16: int, last: int | None, expected: int) -> None:
    assert full_fcnt(fcnt16, last) == expected


REJECTED = [
    # (name, fcnt16, last, exception type, reason)
    ("duplicate", 5, 5, ReplayedFrame, "replayed_fcnt"),
    ("old frame", 4, 5, ReplayedFrame, "replayed_fcnt"),
    ("duplicate of a high counter", 0x0002, 0x0004_0002, ReplayedFrame, "replayed_fcnt"),
    ("much older frame", 0x0000, 0x8000, ReplayedFrame, "replayed_fcnt"),
    ("gap max + 1, no rollover", MAX_FCNT_GAP + 1, 0, FrameError, "fcnt_gap"),
    ("gap max + 1 from a high counter", 0x0003 + MAX_FCNT_GAP + 1, 0x0002_0003, FrameError, "fcnt_gap"),
    # across the rollover a candidate too far ahead is indistinguishable from an old frame
    (
        "gap max + 1 across rollover",
        (0xFFFF + MAX_FCNT_GAP + 1) & 0xFFFF,
        0xFFFF,
        ReplayedFrame,
        "replayed_fcnt",
    ),
    ("exhausted: counter would pass 2**32 - 1", 0x0000, 0xFFFF_FFFF, FrameError, "fcnt_exhausted"),
    ("exhausted after 0xfffffff0", 0x0001, 0xFFFF_FFF0, FrameError, "fcnt_exhausted"),
    ("replay at the very end is still a replay", 0xFFF0, 0xFFFF_FFFF, ReplayedFrame, "replayed_fcnt"),
]


@pytest.mark.parametrize(
    ("fcnt16", "last", "error", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_rejected(fcnt16: int, last: int, error: type[FrameError], reason: str) -> None:
    with pytest.raises(error) as caught:
        full_fcnt(fcnt16, last)
    assert type(caught.value) is error
    assert caught.value.reason == reason


def test_max_gap_is_a_parameter() -> None:
    assert full_fcnt(15, 5, max_gap=10) == 15
    with pytest.raises(FrameError) as caught:
        full_fcnt(16, 5, max_gap=10)
    assert caught.value.reason == "fcnt_gap"


@pytest.mark.parametrize(("fcnt16", "max_gap"), [(-1, 100), (0x1_0000, 100), (0, 0), (0, 0x1_0000)])
def test_bad_arguments_raise_value_error(fcnt16: int, max_gap: int) -> None:
    with pytest.raises(ValueError):
        full_fcnt(fcnt16, 5, max_gap=max_gap)


def test_a_stream_of_frames_with_losses_and_a_replay() -> None:
    """Walk 80,000 counters (one 16-bit rollover) sending every 7th frame; replay one on the way."""
    last: int | None = None
    replays = 0
    for true_fcnt in range(3, 80_000, 7):
        got = full_fcnt(true_fcnt & 0xFFFF, last)
        assert got == true_fcnt
        last = got
        if true_fcnt > 0xFFFF and replays == 0:  # just after the rollover
            with pytest.raises(ReplayedFrame):
                full_fcnt(true_fcnt & 0xFFFF, last)
            replays += 1
    assert replays == 1
    assert last is not None and last > 0xFFFF
