"""Radio realism: what each packet forwarder hears of a frame (RSSI, SNR, SF, loss, CRC errors).

Owns the link model: log-distance path loss from the device to a forwarder with a fixed
per-link shadowing and a per-frame fading, the EU868 noise floor of a 125 kHz channel, the
spreading factor a device settles on (ADR keeps a margin over the demodulation floor), the
loss probability as the SNR nears that floor, and the occasional CRC-error copy a concentrator
reports (Semtech PROTOCOL.TXT §4 ``stat`` -1).

Facts: SX1276 datasheet table 13 (demodulator SNR limits -7.5 dB at SF7 to -20 dB at SF12);
noise floor -174 dBm/Hz + 10·log10(125 kHz) + a 6 dB receiver noise figure = -117 dBm; urban
path-loss exponents 2.7-3.5 with 4-8 dB log-normal shadowing (Rappaport, "Wireless
Communications", §4.9-4.10); 14 dBm EIRP for EU868 end devices (RP002 §2.2.7).

It sends nothing and keeps no clock: callers pass random generators and positions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

SNR_LIMIT_DB: Final = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
NOISE_FLOOR_DBM: Final = -117.0
TX_POWER_DBM: Final = 14.0
ANTENNA_GAINS_DB: Final = 3.0
"""A 3 dBi gateway antenna on a roof; 0 dBi at the device."""
_REF_LOSS_DB: Final = 80.0
"""Path loss at 100 m from a roof-top gateway at 868 MHz (free space is 71 dB; clutter adds ~10)."""
_REF_DISTANCE_M: Final = 100.0
_ADR_MARGIN_DB: Final = 10.0
"""ChirpStack's default installation margin for ADR."""
_EARTH_RADIUS_M: Final = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(a))


def path_loss_db(distance: float, exponent: float) -> float:
    """Log-distance path loss: PL(d0) + 10·n·log10(d / d0), with d0 = 100 m."""
    return _REF_LOSS_DB + 10.0 * exponent * math.log10(max(distance, 10.0) / _REF_DISTANCE_M)


def mean_snr_db(loss_db: float) -> float:
    return TX_POWER_DBM + ANTENNA_GAINS_DB - loss_db - NOISE_FLOOR_DBM


def settle_sf(snr_db: float) -> int:
    """The lowest SF whose demodulation floor plus the ADR margin is below the link's mean SNR."""
    for sf in range(7, 12):
        if snr_db - _ADR_MARGIN_DB >= SNR_LIMIT_DB[sf]:
            return sf
    return 12


@dataclass(frozen=True, slots=True)
class Link:
    """A device-to-forwarder link: its mean path loss (with the link's fixed shadowing)."""

    loss_db: float

    @property
    def snr_db(self) -> float:
        return mean_snr_db(self.loss_db)


@dataclass(frozen=True, slots=True)
class Reception:
    """One forwarder's view of one frame."""

    forwarder: int
    rssi_dbm: float
    snr_db: float
    sf: int
    crc_ok: bool = True


def hear(
    rng: random.Random, links: list[Link], sf: int, extra_loss: float, crc_error_rate: float
) -> list[Reception]:
    """What each forwarder reports of one frame: nothing (lost), a good copy, and maybe a bad one."""
    out: list[Reception] = []
    for index, link in enumerate(links):
        fading_db = rng.gauss(0.0, 2.0)
        snr = link.snr_db + fading_db
        rssi = TX_POWER_DBM + ANTENNA_GAINS_DB - link.loss_db + fading_db
        # Frames fail as the SNR nears the floor: a logistic over ~1 dB around SNR_LIMIT + 1 dB.
        p_lost = 1.0 / (1.0 + math.exp((snr - SNR_LIMIT_DB[sf] - 1.0) / 0.7))
        if rng.random() < p_lost or rng.random() < extra_loss:
            continue
        # Above the noise floor the SNR reported by the SX1301 saturates near +10 dB.
        reported_snr = round(min(snr, 10.0 + rng.gauss(0.0, 0.5)), 1)
        rssi_dbm = round(max(rssi, NOISE_FLOOR_DBM + snr), 0)
        out.append(Reception(index, rssi_dbm, reported_snr, sf))
        if rng.random() < crc_error_rate:
            out.append(Reception(index, rssi_dbm - 3, round(reported_snr - 5, 1), sf, crc_ok=False))
    return out


def corrupt(rng: random.Random, phy_payload: bytes) -> bytes:
    """A copy with a few flipped bits, as a concentrator forwards it when the CRC failed."""
    data = bytearray(phy_payload)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)
