"""Time on air of one LoRa packet: the Semtech SX127x formula, pure arithmetic.

Owns the formula of the SX1276/77/78/79 datasheet §4.1.1.6 ("LoRa Packet
Structure", also Semtech AN1200.13 "LoRa Modem Designer's Guide" p. 7)::

    T_sym      = 2^SF / BW
    n_payload  = 8 + max(ceil((8·PL - 4·SF + 28 + 16·CRC - 20·IH) / (4·(SF - 2·DE))) · (CR + 4), 0)
    T_packet   = (n_preamble + 4.25 + n_payload) · T_sym

PL is the PHYPayload length in bytes, CR is 1..4 for 4/5..4/8, IH is 1 for an
implicit header, DE is 1 with low-data-rate optimisation. It owns no radio and no
regional rules (``dutycycle.py`` decides what the airtime may be spent on).

LoRaWAN facts worth knowing: uplinks carry a PHY CRC, downlinks do not (LoRaWAN
1.0.4 §4, "no CRC on downlinks"); both use an explicit header and 8 preamble symbols.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

Ldro = Literal["auto", "on", "off"]

_CODING_RATE = re.compile(r"4/([5-8])(?:LI)?")
# SX1276 datasheet §4.1.1.6 and AN1200.13: low-data-rate optimisation is mandated
# when the symbol lasts more than 16 ms (SF11/SF12 at 125 kHz, SF12 at 250 kHz).
LDRO_SYMBOL_S: Final = 0.016
# SX127x demodulates SF6..SF12 (SF5 exists only on SX126x/SX1302, with other constants).
SF_RANGE: Final = range(6, 13)
MAX_PAYLOAD_BYTES: Final = 255  # RegPayloadLength is one byte


@dataclass(frozen=True, slots=True)
class LoraParams:
    """Modulation settings that fix the airtime of a packet (payload length apart)."""

    sf: int
    bw_hz: int = 125_000
    coding_rate: str = "4/5"
    preamble_symbols: int = 8
    implicit_header: bool = False
    crc: bool = True
    ldro: Ldro = "auto"

    def __post_init__(self) -> None:
        if self.sf not in SF_RANGE:
            raise ValueError(f"sf must be in 6..12, got {self.sf}")
        if self.bw_hz <= 0:
            raise ValueError(f"bw_hz must be positive, got {self.bw_hz}")
        if _CODING_RATE.fullmatch(self.coding_rate) is None:
            raise ValueError(f"coding rate must be 4/5, 4/6, 4/7 or 4/8, got {self.coding_rate!r}")
        if not 0 <= self.preamble_symbols <= 0xFFFF:
            raise ValueError(f"preamble must be 0..65535 symbols, got {self.preamble_symbols}")
        if self.ldro not in ("auto", "on", "off"):
            raise ValueError(f"ldro must be auto, on or off, got {self.ldro!r}")

    @property
    def symbol_s(self) -> float:
        return float(2**self.sf) / self.bw_hz

    @property
    def low_data_rate_optimize(self) -> bool:
        if self.ldro == "auto":
            return self.symbol_s > LDRO_SYMBOL_S
        return self.ldro == "on"


def coding_rate_index(coding_rate: str) -> int:
    """1..4 for "4/5".."4/8" (the CR of the formula and of RegModemConfig1)."""
    match = _CODING_RATE.fullmatch(coding_rate)
    if match is None:
        raise ValueError(f"coding rate must be 4/5, 4/6, 4/7 or 4/8, got {coding_rate!r}")
    return int(match[1]) - 4


def payload_symbols(payload_bytes: int, params: LoraParams) -> int:
    """Symbols after the preamble (header + payload + CRC), n_payload of the formula."""
    if not 0 <= payload_bytes <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload must be 0..{MAX_PAYLOAD_BYTES} bytes, got {payload_bytes}")
    de = 1 if params.low_data_rate_optimize else 0
    ih = 1 if params.implicit_header else 0
    crc = 1 if params.crc else 0
    numerator = 8 * payload_bytes - 4 * params.sf + 28 + 16 * crc - 20 * ih
    denominator = 4 * (params.sf - 2 * de)
    blocks = max(math.ceil(numerator / denominator), 0)
    return 8 + blocks * (coding_rate_index(params.coding_rate) + 4)


def airtime_s(payload_bytes: int, params: LoraParams) -> float:
    """Time on air in seconds of a packet with ``payload_bytes`` of PHYPayload."""
    symbols = params.preamble_symbols + 4.25 + payload_symbols(payload_bytes, params)
    return symbols * params.symbol_s


def airtime_ms(payload_bytes: int, params: LoraParams) -> float:
    """Time on air in milliseconds (what ``edgegw airtime`` prints)."""
    return airtime_s(payload_bytes, params) * 1000.0
