"""EU868 regional parameters the edge server needs for downlinks.

Owns the EU868 data-rate table (DR0..DR5 = SF12..SF7 at 125 kHz, DR6 = SF7 at
250 kHz; RP002-1.0.x §2.4.3), the RX1 data-rate rule (uplink DR minus
RX1DROffset, clamped at DR0; §2.4.7), the default RX2 channel (869.525 MHz,
DR0) and the receive delays of LoRaWAN 1.0.4 §6 and RP002 §2.4
(RECEIVE_DELAY1 = 1 s, JOIN_ACCEPT_DELAY1 = 5 s, each second window 1 s later).

It does not own airtime or duty-cycle accounting (the radio layer's scheduler),
nor other regions: only EU868 is supported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RX2_DR",
    "DEFAULT_RX2_FREQ_HZ",
    "JOIN_ACCEPT_DELAY1_S",
    "JOIN_ACCEPT_DELAY2_S",
    "RECEIVE_DELAY1_S",
    "DataRate",
    "data_rate",
    "dr_of",
    "rx1_dr",
]

logger = logging.getLogger(__name__)

RECEIVE_DELAY1_S = 1
JOIN_ACCEPT_DELAY1_S = 5
JOIN_ACCEPT_DELAY2_S = 6
DEFAULT_RX2_FREQ_HZ = 869_525_000
DEFAULT_RX2_DR = 0
MAX_DR = 6
"""LoRa data rates only: DR7 (FSK) is never used for downlinks here."""


@dataclass(frozen=True, slots=True)
class DataRate:
    sf: int
    bw_hz: int


_TABLE = (
    DataRate(12, 125_000),
    DataRate(11, 125_000),
    DataRate(10, 125_000),
    DataRate(9, 125_000),
    DataRate(8, 125_000),
    DataRate(7, 125_000),
    DataRate(7, 250_000),
)


def data_rate(dr: int) -> DataRate:
    """The modulation of EU868 data rate ``dr`` (0..6); ValueError otherwise."""
    if not 0 <= dr <= MAX_DR:
        raise ValueError(f"EU868 LoRa data rate must be 0..{MAX_DR}, got {dr}")
    return _TABLE[dr]


def dr_of(sf: int, bw_hz: int) -> int:
    """The EU868 data rate of an uplink's modulation; ValueError if it is not one."""
    try:
        return _TABLE.index(DataRate(sf, bw_hz))
    except ValueError:
        raise ValueError(f"SF{sf} at {bw_hz} Hz is not an EU868 LoRa data rate") from None


def rx1_dr(uplink_dr: int, rx1_dr_offset: int) -> int:
    """RX1 data rate: the uplink's minus RX1DROffset (0..5), never below DR0 (RP002 EU868 RX1 table)."""
    if not 0 <= rx1_dr_offset <= 5:
        raise ValueError(f"EU868 RX1DROffset must be 0..5, got {rx1_dr_offset}")
    return max(0, uplink_dr - rx1_dr_offset)
