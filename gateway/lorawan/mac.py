"""LoRaWAN 1.0.x MAC commands: split FOpts / FPort-0 payloads into commands, build the answers we owe.

Owns the command identifiers and payload sizes of LoRaWAN 1.0.4 §5 (Table 4) in
both directions, the pure splitting of a command stream, and the two answers a
gateway-side network server gives here: LinkCheckAns (§5.2) and DeviceTimeAns
(§5.9). The answers to the requests this server sends (LinkADRAns to ADR's
LinkADRReq, DevStatusAns to DevStatusReq) are split here and read by those
features (``adr``, ``devstatus``); the others (DutyCycleAns, RXParamSetupAns, ...)
are parsed so that they can be logged: nothing here sends their requests.

It does not own decryption of FPort-0 payloads (``crypto``) nor when an answer
is sent (``downlink``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = [
    "DEMOD_FLOOR_DB",
    "GPS_EPOCH_UNIX_S",
    "MacCommand",
    "device_time_ans",
    "gps_time_s",
    "link_check_ans",
    "link_margin_db",
    "parse_commands",
]

logger = logging.getLogger(__name__)

LINK_CHECK = 0x02
DEVICE_TIME = 0x0D

# CID -> (name, payload bytes), LoRaWAN 1.0.4 §5 Table 4 (1.0.x commands; 0x80..0xFF proprietary).
_UPLINK = {
    0x01: ("ResetInd", 1),  # 1.1 only; listed so a 1.1 device's frame still splits
    0x02: ("LinkCheckReq", 0),
    0x03: ("LinkADRAns", 1),
    0x04: ("DutyCycleAns", 0),
    0x05: ("RXParamSetupAns", 1),
    0x06: ("DevStatusAns", 2),
    0x07: ("NewChannelAns", 1),
    0x08: ("RXTimingSetupAns", 0),
    0x09: ("TxParamSetupAns", 0),
    0x0A: ("DlChannelAns", 1),
    0x0D: ("DeviceTimeReq", 0),
}
_DOWNLINK = {
    0x02: ("LinkCheckAns", 2),
    0x03: ("LinkADRReq", 4),
    0x04: ("DutyCycleReq", 1),
    0x05: ("RXParamSetupReq", 4),
    0x06: ("DevStatusReq", 0),
    0x07: ("NewChannelReq", 5),
    0x08: ("RXTimingSetupReq", 1),
    0x09: ("TxParamSetupReq", 1),
    0x0A: ("DlChannelReq", 4),
    0x0D: ("DeviceTimeAns", 5),
}

DEMOD_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
"""Lowest SNR at which each spreading factor still demodulates (SX1276 datasheet Table 13); LinkCheckAns
Margin is measured from it (§5.2: "the link margin in dB of the last successfully received LinkCheckReq")."""

GPS_EPOCH_UNIX_S = 315_964_800
"""1980-01-06T00:00:00Z, the GPS epoch DeviceTimeAns counts from (§5.9)."""
GPS_LEAP_SECONDS = 18
"""GPS time runs ahead of UTC by the leap seconds since 1980: 18 since 2017-01-01 (IERS Bulletin C)."""


@dataclass(frozen=True, slots=True)
class MacCommand:
    cid: int
    name: str
    payload: bytes

    def as_json(self) -> dict[str, object]:
        return {"cid": self.cid, "name": self.name, "payload": self.payload.hex()}


def parse_commands(data: bytes, *, uplink: bool) -> tuple[list[MacCommand], bytes]:
    """Split a MAC command stream into commands; also return the bytes that could not be read.

    An unknown or proprietary CID has no known length, so the rest of the stream
    from it on is returned unread (§5: "the first unknown command ... stops
    processing"); so is a command cut short.
    """
    table = _UPLINK if uplink else _DOWNLINK
    commands: list[MacCommand] = []
    pos = 0
    while pos < len(data):
        known = table.get(data[pos])
        if known is None:
            break
        name, size = known
        end = pos + 1 + size
        if end > len(data):
            break
        commands.append(MacCommand(data[pos], name, data[pos + 1 : end]))
        pos = end
    return commands, data[pos:]


def link_margin_db(snr_db: float, sf: int) -> int:
    """LinkCheckAns Margin: dB above the demodulation floor, 0..254 (255 is reserved)."""
    floor = DEMOD_FLOOR_DB.get(sf, -20.0)
    return max(0, min(254, int(snr_db - floor)))


def link_check_ans(margin_db: int, gw_cnt: int) -> bytes:
    """LinkCheckAns (CID 0x02): Margin (0..254 dB) and GwCnt (gateways that heard the request)."""
    return bytes((LINK_CHECK, max(0, min(254, margin_db)), max(1, min(255, gw_cnt))))


def gps_time_s(unix_s: float) -> float:
    """Seconds since the GPS epoch for a Unix (UTC) time, leap seconds included."""
    return unix_s - GPS_EPOCH_UNIX_S + GPS_LEAP_SECONDS


def device_time_ans(gps_s: float) -> bytes:
    """DeviceTimeAns (CID 0x0D, §5.9): 32-bit GPS seconds (little-endian) + fraction in 1/256 s."""
    seconds = int(gps_s)
    fraction = int((gps_s - seconds) * 256) & 0xFF
    return bytes((DEVICE_TIME,)) + (seconds & 0xFFFFFFFF).to_bytes(4, "little") + bytes((fraction,))
