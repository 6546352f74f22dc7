"""Uplink frame-counter reconstruction: 16 bits on the air → the session's 32-bit FCntUp.

Owns the rule that turns FHDR's 16-bit FCnt into the full counter the MIC
covers (LoRaWAN 1.0.4 §4.3.1.5: devices keep a 32-bit counter and send its
low 16 bits) and decides, from the last accepted counter alone, whether a
frame is new, a replay or too far ahead.

It does not own the stored counters (``sessions``), nor the MIC check that must
confirm a reconstructed counter before it is accepted: a frame that passes here
is only a candidate.
"""

from __future__ import annotations

import logging

from gateway.errors import FrameError, ReplayedFrame

__all__ = ["FCNT_MAX", "MAX_FCNT_GAP", "full_fcnt"]

logger = logging.getLogger(__name__)

MAX_FCNT_GAP = 16384
"""The largest forward jump accepted, in frames: MAX_FCNT_GAP of LoRaWAN 1.0.x (1.0.3 §4.3.1.5)."""
FCNT_MAX = 0xFFFFFFFF
_LOW_BITS = 0xFFFF
_HIGH_BITS = 0xFFFF0000
_ROLLOVER = 0x10000


def full_fcnt(fcnt16: int, last: int | None, max_gap: int = MAX_FCNT_GAP) -> int:
    """Reconstruct the 32-bit uplink counter from the 16 bits on the air.

    ``last`` is the last accepted counter of this session (None before the
    first frame, which is then taken at face value). The candidate keeps the
    high half of ``last``; if it is not ahead of ``last`` the low half must have
    rolled over. A candidate more than ``max_gap`` ahead is refused:

    * ahead without rollover but too far: ``FrameError(reason="fcnt_gap")``;
    * not ahead even after rollover (a duplicate, a replay or an old frame):
      ``ReplayedFrame`` (reason ``replayed_fcnt``);
    * past 2**32 - 1: ``FrameError(reason="fcnt_exhausted")``; the device must rejoin.

    ``max_gap`` must be below 2**16, or a duplicate would look like a rollover.
    """
    if not 0 <= fcnt16 <= _LOW_BITS:
        raise ValueError(f"fcnt16 out of range: {fcnt16}")
    if not 0 < max_gap < _ROLLOVER:
        raise ValueError(f"max_gap must be in 1..65535, got {max_gap}")
    if last is None:
        return fcnt16
    candidate = (last & _HIGH_BITS) | fcnt16
    if candidate > last:
        if candidate - last > max_gap:
            raise FrameError(f"FCnt {candidate} is {candidate - last} ahead of {last}", reason="fcnt_gap")
        return candidate
    candidate += _ROLLOVER
    if candidate - last > max_gap:
        raise ReplayedFrame(f"FCnt {fcnt16} (16-bit) is not ahead of {last}")
    if candidate > FCNT_MAX:
        raise FrameError(f"FCnt would pass 2**32 - 1 after {last}", reason="fcnt_exhausted")
    return candidate
