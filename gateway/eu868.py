"""The EU863-870 sub-bands and what a transmitter may do in each: shared by the config checks, the
radio layer and the LoRaWAN side (they may not import each other; docs/architecture.md).

Owns the sub-band table of ETSI EN 300 220-2 V3.1.1 (Table B.1) as The Things Stack encodes it
(pkg/band/eu_863_870.go, names K..R): frequency range, duty cycle and maximum e.r.p. of each, the
ERP/EIRP relation, the conducted power a radio may be commanded through a given antenna, and the
question "may a channel be used at all" (the whole channel inside one sub-band). docs/radio.md,
"Transmit power", states the definitions.

It owns no accounting (``gateway.radio.dutycycle``) and no LoRaWAN channel plan
(``gateway.lorawan.region``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_ANTENNA_GAIN_DBI",
    "DIPOLE_GAIN_DBI",
    "EU868_SUB_BANDS",
    "WINDOW_S",
    "SubBand",
    "max_conducted_dbm",
    "sub_band_for",
]

WINDOW_S: Final = 3600.0
"""The duty cycle's observation period: EN 300 220 counts transmit time over one hour."""

DIPOLE_GAIN_DBI: Final = 2.15
"""Gain of a half-wave dipole over an isotropic radiator: e.i.r.p. = e.r.p. + 2.15 dB."""

DEFAULT_ANTENNA_GAIN_DBI: Final = DIPOLE_GAIN_DBI
"""``radio.antenna_gain_dbi`` by default: the 2-3 dBi omni whip a concentrator HAT ships with is a
dipole-class antenna, and with a dipole the conducted power equals the e.r.p. (14 dBm in the RX1
bands, 27 dBm at 869.525 MHz). Any antenna with more gain must be configured (docs/radio.md)."""


@dataclass(frozen=True, slots=True)
class SubBand:
    """One regulated sub-band: a whole channel must fit in [low_hz, high_hz]."""

    name: str
    low_hz: int
    high_hz: int
    duty_cycle: float
    """Fraction of the window that may be spent transmitting (0.01 = 1 %)."""
    max_erp_dbm: float
    """The e.r.p. limit, in the whole dBm RP002 and the network servers write (25 mW = 13.98 dBm → 14)."""

    @property
    def max_eirp_dbm(self) -> float:
        return self.max_erp_dbm + DIPOLE_GAIN_DBI

    def holds(self, freq_hz: int, bw_hz: int) -> bool:
        half = bw_hz / 2
        return self.low_hz <= freq_hz - half and freq_hz + half <= self.high_hz

    def limit_s(self, window_s: float = WINDOW_S) -> float:
        return self.duty_cycle * window_s


# TTS names (K..R) and limits from pkg/band/eu_863_870.go, "See ETSI EN 300.220-2 V3.1.1
# (2017-02)": 14 dBm (25 mW) e.r.p. everywhere but P, 27 dBm (500 mW) in P. 869.2-869.4 MHz (O)
# is absent there too: it is not a band for generic short-range devices, nothing may be sent in it.
EU868_SUB_BANDS: Final[tuple[SubBand, ...]] = (
    SubBand("K", 863_000_000, 865_000_000, 0.001, 14.0),
    SubBand("L", 865_000_000, 868_000_000, 0.01, 14.0),
    SubBand("M", 868_000_000, 868_600_000, 0.01, 14.0),
    SubBand("N", 868_700_000, 869_200_000, 0.001, 14.0),
    SubBand("P", 869_400_000, 869_650_000, 0.1, 27.0),
    SubBand("R", 869_700_000, 870_000_000, 0.01, 14.0),
)


def sub_band_for(
    freq_hz: int, bw_hz: int = 125_000, bands: tuple[SubBand, ...] = EU868_SUB_BANDS
) -> SubBand | None:
    """The sub-band that holds the whole channel, or None (transmitting there is not allowed)."""
    for band in bands:
        if band.holds(freq_hz, bw_hz):
            return band
    return None


def max_conducted_dbm(band: SubBand, antenna_gain_dbi: float) -> int:
    """The highest whole-dBm conducted power that stays within the band's e.i.r.p. through an
    antenna of ``antenna_gain_dbi`` (net of cable loss): e.i.r.p. limit - gain, rounded down."""
    # 1e-9: 16.15 - 2.15 is 13.999999999999998 in binary floating point, and 14 is allowed.
    return math.floor(band.max_eirp_dbm - antenna_gain_dbi + 1e-9)
