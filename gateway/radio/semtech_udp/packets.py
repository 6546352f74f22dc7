"""Semtech UDP packet-forwarder protocol (version 2): the pure datagram codec.

Owns the byte layout of the six datagrams of Semtech's PROTOCOL.TXT
(Lora-net/packet_forwarder, protocol version 2, document revision v1.3), the
JSON objects they carry (``rxpk``, ``stat``, ``txpk``, ``txpk_ack``) and the
conversion of one ``rxpk`` into a PHYPayload plus :class:`~gateway.messages.RxInfo`.
``make_rxpk`` builds the ``rxpk`` a real forwarder would send, for the simulator.

It owns no sockets, clocks or counters (``backend.py`` does) and never parses
LoRaWAN. Every malformed input raises :class:`~gateway.errors.DatagramError`
with a short ``reason``; no other exception escapes :func:`parse` or
:func:`rxpk_to_frame_parts`, whatever the bytes. A malformed datagram is refused whole;
a malformed ``rxpk`` inside a well-formed PUSH_DATA is refused alone (by
:func:`rxpk_to_frame_parts`), the other ``rxpk`` of the datagram are not affected.

Header of every datagram (PROTOCOL.TXT §3.2-§5.5)::

    byte 0     protocol version (2; 1 is accepted, see PROTOCOL_VERSIONS)
    bytes 1-2  token (random, chosen by the sender of the request, echoed by the ack)
    byte 3     identifier (PUSH_DATA 0x00 ... TX_ACK 0x05)
    then       gateway EUI (8 bytes) for gateway → server datagrams, and/or a JSON object
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypedDict, cast

from gateway.errors import DatagramError
from gateway.messages import RxInfo

PROTOCOL_VERSION: Final = 2
# Version 1 is the pre-TX_ACK protocol (PROTOCOL.TXT §7, revisions up to v1.2): the same
# header and JSON, no TX_ACK, and PULL_RESP bytes 1-2 "unused". Older forwarders still
# in the field send it, so we parse it and answer in the version we were spoken to
# (the reference forwarder drops acks whose version byte differs from its own).
PROTOCOL_VERSIONS: Final = frozenset({1, 2})

PUSH_DATA: Final = 0x00
PUSH_ACK: Final = 0x01
PULL_DATA: Final = 0x02
PULL_RESP: Final = 0x03
PULL_ACK: Final = 0x04
TX_ACK: Final = 0x05

HEADER_SIZE: Final = 4
EUI_SIZE: Final = 8
_EUI_END: Final = HEADER_SIZE + EUI_SIZE

BACKEND_NAME: Final = "semtech-udp"

# txpk_ack "error" values listed in PROTOCOL.TXT §6 (anything else is counted as "other").
TX_ACK_ERRORS: Final = frozenset(
    {
        "NONE",
        "TOO_LATE",
        "TOO_EARLY",
        "COLLISION_PACKET",
        "COLLISION_BEACON",
        "TX_FREQ",
        "TX_POWER",
        "GPS_UNLOCKED",
    }
)

_DATR_LORA = re.compile(r"SF(\d{1,2})BW(\d{1,3})")
# "OFF" is what the reference forwarder writes for an undefined coding rate; the "LI"
# suffix (long interleaving) comes from SX1302-era forwarders.
_CODR = re.compile(r"4/[5-8](LI)?|OFF")
_BW_KHZ: Final = frozenset({125, 250, 500})
_SF_RANGE: Final = range(5, 13)  # SX1302 demodulates SF5/SF6 too; EU868 LoRaWAN uses 7..12
_FREQ_MHZ_MAX: Final = 10_000.0
_MAX_TIME_CHARS: Final = 64

# Input bounds, checked before anything is parsed or kept (docs/radio.md, "Bounds").
# The largest PUSH_DATA a real concentrator can produce: one fetch of the SX1302 RX
# buffer (4,096 bytes, libloragw loragw_sx1302_rx.h) holds at most 117 frames of the
# smallest LoRaWAN PHYPayload (12 bytes + 9 + 14 bytes of buffer metadata); at most
# 274 bytes of rxpk JSON each (GPS time included) plus the 200-byte stat (STATUS_SIZE
# in lora_pkt_fwd.c), that is about 32,300 bytes. The SX1301 packet_forwarder sends at
# most 8 frames (TX_BUFF_SIZE 4,550 bytes). UDP itself allows 65,507.
MAX_DATAGRAM_BYTES: Final = 32 * 1024
# lora_pkt_fwd.c (sx1302_hal) NB_PKT_MAX: packets per fetch/send cycle.
MAX_RXPK_PER_DATAGRAM: Final = 255
# A stat object is reduced to the fields of PROTOCOL.TXT §4 (STAT_FIELDS); the
# reference forwarder's stat fits STATUS_SIZE (200 bytes), so more keys than this
# is not a forwarder talking.
MAX_STAT_KEYS: Final = 64


class RsigEntry(TypedDict, total=False):
    """One antenna's signal report inside ``rxpk.rsig`` (multi-antenna / "jver":2 forwarders).

    Not in PROTOCOL.TXT; sent by e.g. Kerlink forwarders instead of top-level rssi/lsnr.
    """

    ant: int
    chan: int
    rssic: float
    """Channel RSSI in dBm (what top-level ``rssi`` reports)."""
    rssis: float
    lsnr: float
    etime: str
    foff: int


class Rxpk(TypedDict, total=False):
    """One received RF packet, PROTOCOL.TXT §4 (JSON we do not own).

    Every key is optional at the type level because forwarders differ;
    :func:`rxpk_to_frame_parts` checks what it needs. ``tmms``, ``rsig``, ``brd``,
    ``aesk`` and ``jver`` are not in PROTOCOL.TXT but are sent by later forwarders.
    """

    time: str
    tmms: int
    tmst: int
    chan: int
    rfch: int
    freq: float
    stat: int
    modu: str
    datr: str | int
    codr: str
    rssi: float
    lsnr: float
    size: int
    data: str
    rsig: list[RsigEntry]
    brd: int
    aesk: int
    jver: int


class Stat(TypedDict, total=False):
    """Gateway status, the ``stat`` object of PROTOCOL.TXT §4.

    Forwarders add more keys (``temp``, ``desc``, ``mail``...); :func:`parse` keeps
    only these, with the right types, so a stat never holds what a sender chose to put in.
    """

    time: str
    lati: float
    long: float
    alti: int
    rxnb: int
    rxok: int
    rxfw: int
    ackr: float
    dwnb: int
    txnb: int


STAT_FIELDS: Final[dict[str, str]] = {
    "time": "text",
    "lati": "number",
    "long": "number",
    "alti": "int",
    "rxnb": "int",
    "rxok": "int",
    "rxfw": "int",
    "ackr": "number",
    "dwnb": "int",
    "txnb": "int",
}
"""The ``stat`` keys kept (PROTOCOL.TXT §4) and the JSON type each must have."""


def _header(version: int, token: int, identifier: int) -> bytes:
    return bytes((version, token >> 8, token & 0xFF, identifier))


def _check_common(token: int, version: int) -> None:
    # Programming errors on our own side (not untrusted input): ValueError is right here.
    if not 0 <= token <= 0xFFFF:
        raise ValueError(f"token must be a 16-bit unsigned integer, got {token}")
    if version not in PROTOCOL_VERSIONS:
        raise ValueError(f"protocol version must be one of {sorted(PROTOCOL_VERSIONS)}, got {version}")


def _check_eui(gateway_eui: bytes) -> None:
    if len(gateway_eui) != EUI_SIZE:
        raise ValueError(f"gateway EUI must be {EUI_SIZE} bytes, got {len(gateway_eui)}")


def _dump_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class PushData:
    """§3.2 gateway → server: received RF packets (``rxpk``) and/or gateway status (``stat``).

    A parsed PUSH_DATA is well formed (header, EUI, a JSON object, ``rxpk`` an array of at most
    ``MAX_RXPK_PER_DATAGRAM``, ``stat`` an object); its ``rxpk`` entries are as sent, unchecked:
    :func:`rxpk_to_frame_parts` checks each one on its own.
    """

    token: int
    gateway_eui: bytes
    rxpk: list[Rxpk]
    stat: Stat | None = None
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)
        _check_eui(self.gateway_eui)

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {}
        if self.rxpk:
            body["rxpk"] = self.rxpk
        if self.stat is not None:
            body["stat"] = self.stat
        return _header(self.version, self.token, PUSH_DATA) + self.gateway_eui + _dump_json(body)


@dataclass(frozen=True, slots=True)
class PushAck:
    """§3.3 server → gateway: acknowledges a PUSH_DATA, same token."""

    token: int
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)

    def to_bytes(self) -> bytes:
        return _header(self.version, self.token, PUSH_ACK)


@dataclass(frozen=True, slots=True)
class PullData:
    """§5.2 gateway → server: keep-alive that opens the downlink route through NAT."""

    token: int
    gateway_eui: bytes
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)
        _check_eui(self.gateway_eui)

    def to_bytes(self) -> bytes:
        return _header(self.version, self.token, PULL_DATA) + self.gateway_eui


@dataclass(frozen=True, slots=True)
class PullAck:
    """§5.3 server → gateway: acknowledges a PULL_DATA, same token."""

    token: int
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)

    def to_bytes(self) -> bytes:
        return _header(self.version, self.token, PULL_ACK)


@dataclass(frozen=True, slots=True)
class PullResp:
    """§5.4 server → gateway: one packet to transmit (``txpk``, §6), answered by TX_ACK."""

    token: int
    txpk: dict[str, Any]
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)

    def to_bytes(self) -> bytes:
        return _header(self.version, self.token, PULL_RESP) + _dump_json({"txpk": self.txpk})


@dataclass(frozen=True, slots=True)
class TxAck:
    """§5.5 gateway → server: whether the PULL_RESP with this token was scheduled.

    ``error`` is None when the datagram carries no JSON ("no error occurred", §5.5);
    otherwise the ``txpk_ack.error`` string as sent, "NONE" meaning success (§6).
    """

    token: int
    gateway_eui: bytes
    error: str | None = None
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_common(self.token, self.version)
        _check_eui(self.gateway_eui)

    @property
    def ok(self) -> bool:
        return self.error is None or self.error == "NONE"

    def to_bytes(self) -> bytes:
        head = _header(self.version, self.token, TX_ACK) + self.gateway_eui
        if self.error is None:
            return head
        return head + _dump_json({"txpk_ack": {"error": self.error}})


Packet = PushData | PushAck | PullData | PullAck | PullResp | TxAck


# --------------------------------------------------------------------------- parsing


def _fail(message: str, reason: str) -> NoReturn:
    raise DatagramError(message, reason=reason)


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default; they are not JSON and would poison numbers.
    raise ValueError(f"non-finite number {name} in JSON")


def _load_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and ints beyond sys.int_info digits limit;
        # RecursionError covers absurdly nested arrays.
        raise DatagramError(f"JSON payload does not parse: {exc}", reason="bad_json") from exc
    if not isinstance(value, dict):
        _fail(f"JSON payload must be an object, got {type(value).__name__}", "bad_json")
    return value


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python; JSON true/false are not numbers.
    return isinstance(value, int) and not isinstance(value, bool)


def _as_float(value: object) -> float | None:
    """A finite float from a JSON number, or None (also for bools and ints too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _b64decode(text: str) -> bytes:
    # §4 says rxpk data is "padded" and §6 says txpk padding is optional, yet §4's own
    # examples are unpadded: accept both, standard alphabet only.
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters
        raise DatagramError(f"rxpk data is not base64: {exc}", reason="bad_base64") from exc


def _rxpk_payload(rxpk: Any) -> bytes:
    """The decoded ``data`` of one rxpk, checked against its ``size`` when present."""
    if not isinstance(rxpk, dict):
        _fail(f"rxpk entries must be objects, got {type(rxpk).__name__}", "bad_rxpk")
    data = rxpk.get("data")
    if not isinstance(data, str):
        _fail("rxpk has no 'data' string", "bad_rxpk")
    payload = _b64decode(data)
    if "size" in rxpk:
        size = rxpk["size"]
        if not _is_int(size):
            _fail(f"rxpk 'size' must be an integer, got {size!r}", "bad_rxpk")
        if size != len(payload):
            _fail(f"rxpk 'size' is {size} but 'data' decodes to {len(payload)} bytes", "size_mismatch")
    return payload


def _parse_push_data(version: int, token: int, datagram: bytes) -> PushData:
    if len(datagram) < _EUI_END:
        _fail(f"PUSH_DATA needs {_EUI_END} bytes before its JSON, got {len(datagram)}", "truncated")
    body = _load_object(datagram[_EUI_END:])
    rxpk = body.get("rxpk", [])
    if not isinstance(rxpk, list):
        _fail(f"'rxpk' must be an array, got {type(rxpk).__name__}", "bad_rxpk")
    if len(rxpk) > MAX_RXPK_PER_DATAGRAM:
        _fail(f"{len(rxpk)} rxpk in one PUSH_DATA (at most {MAX_RXPK_PER_DATAGRAM})", "too_many_rxpk")
    # The entries are not checked here: each is a packet of its own (§4), and one a forwarder got
    # wrong (bad base64, a size that does not match its data, FSK) must not cost the others of the
    # datagram, nor its PUSH_ACK. rxpk_to_frame_parts checks each entry.
    stat = body.get("stat")
    if stat is not None and not isinstance(stat, dict):
        _fail(f"'stat' must be an object, got {type(stat).__name__}", "bad_stat")
    kept = None if stat is None else _stat_fields(stat)
    return PushData(token, datagram[HEADER_SIZE:_EUI_END], rxpk, kept, version)


def _stat_fields(stat: dict[str, Any]) -> Stat:
    """The §4 fields of a ``stat`` object, each only when it has the right type.

    A new dict: nothing of the sender's object (other keys, long strings, nested
    values) survives the datagram.
    """
    if len(stat) > MAX_STAT_KEYS:
        _fail(f"'stat' has {len(stat)} keys (at most {MAX_STAT_KEYS})", "stat_too_large")
    kept: dict[str, Any] = {}
    for key, kind in STAT_FIELDS.items():
        value = stat.get(key)
        if kind == "text":
            if isinstance(value, str) and len(value) <= _MAX_TIME_CHARS:
                kept[key] = value
        elif kind == "int":
            if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
                kept[key] = value
        else:
            number = _as_float(value)
            if number is not None:
                kept[key] = value if _is_int(value) else number
    return cast(Stat, kept)


def _expect_length(datagram: bytes, size: int, name: str) -> None:
    if len(datagram) < size:
        _fail(f"{name} needs {size} bytes, got {len(datagram)}", "truncated")
    if len(datagram) > size:
        _fail(f"{name} has {len(datagram) - size} bytes after its end", "trailing_bytes")


def _parse_push_ack(version: int, token: int, datagram: bytes) -> PushAck:
    _expect_length(datagram, HEADER_SIZE, "PUSH_ACK")
    return PushAck(token, version)


def _parse_pull_data(version: int, token: int, datagram: bytes) -> PullData:
    _expect_length(datagram, _EUI_END, "PULL_DATA")
    return PullData(token, datagram[HEADER_SIZE:_EUI_END], version)


def _parse_pull_ack(version: int, token: int, datagram: bytes) -> PullAck:
    _expect_length(datagram, HEADER_SIZE, "PULL_ACK")
    return PullAck(token, version)


def _parse_pull_resp(version: int, token: int, datagram: bytes) -> PullResp:
    body = _load_object(datagram[HEADER_SIZE:])
    txpk = body.get("txpk")
    if not isinstance(txpk, dict):
        _fail("PULL_RESP JSON has no 'txpk' object (§6)", "bad_txpk")
    return PullResp(token, txpk, version)


def _parse_tx_ack(version: int, token: int, datagram: bytes) -> TxAck:
    if len(datagram) < _EUI_END:
        _fail(f"TX_ACK needs {_EUI_END} bytes, got {len(datagram)}", "truncated")
    eui = datagram[HEADER_SIZE:_EUI_END]
    rest = datagram[_EUI_END:]
    # §5.5: the JSON is optional, "empty string" means no error. Some forwarders send a
    # C string terminator or whitespace instead of nothing.
    if not rest.strip(b"\x00 \t\r\n"):
        return TxAck(token, eui, None, version)
    body = _load_object(rest.rstrip(b"\x00"))
    ack = body.get("txpk_ack")
    if not isinstance(ack, dict):
        _fail("TX_ACK JSON has no 'txpk_ack' object (§6)", "bad_tx_ack")
    error = ack.get("error")
    if error is not None and not isinstance(error, str):
        _fail(f"txpk_ack 'error' must be a string, got {error!r}", "bad_tx_ack")
    return TxAck(token, eui, error, version)


_PARSERS: Final[dict[int, Callable[[int, int, bytes], Packet]]] = {
    PUSH_DATA: _parse_push_data,
    PUSH_ACK: _parse_push_ack,
    PULL_DATA: _parse_pull_data,
    PULL_RESP: _parse_pull_resp,
    PULL_ACK: _parse_pull_ack,
    TX_ACK: _parse_tx_ack,
}


def parse(datagram: bytes, *, max_bytes: int = MAX_DATAGRAM_BYTES) -> Packet:
    """Decode one datagram; raises only :class:`DatagramError` (reason in ``.reason``).

    A datagram longer than ``max_bytes`` is refused (``datagram_too_large``) before
    any of it is decoded.
    """
    if len(datagram) > max_bytes:
        _fail(f"datagram of {len(datagram)} bytes is longer than {max_bytes}", "datagram_too_large")
    if len(datagram) < HEADER_SIZE:
        _fail(f"datagram of {len(datagram)} bytes is shorter than the 4-byte header", "truncated")
    version = datagram[0]
    if version not in PROTOCOL_VERSIONS:
        _fail(f"protocol version {version} is not supported (expected 2, or 1)", "bad_version")
    parser = _PARSERS.get(datagram[3])
    if parser is None:
        _fail(f"unknown identifier 0x{datagram[3]:02x}", "unknown_identifier")
    token = (datagram[1] << 8) | datagram[2]
    return parser(version, token, bytes(datagram))


# --------------------------------------------------------------------------- rxpk ↔ frame


def _field_number(rxpk: dict[str, Any], key: str, where: str = "rxpk") -> float:
    value = rxpk.get(key)
    number = _as_float(value)
    if number is None:
        _fail(f"{where} '{key}' must be a finite number, got {str(value)[:32]!r}", "bad_rxpk")
    return number


def _antenna(entry: object) -> tuple[float, float] | None:
    """(rssi_dbm, snr_db) of one ``rsig`` entry, or None when it lacks a usable number."""
    if not isinstance(entry, dict):
        return None
    rssi, snr = _as_float(entry.get("rssic")), _as_float(entry.get("lsnr"))
    return None if rssi is None or snr is None else (rssi, snr)


def _signal(rxpk: dict[str, Any]) -> tuple[float, float]:
    """(rssi_dbm, snr_db): top-level rssi/lsnr (§4), else the best antenna of ``rsig``.

    Multi-antenna forwarders report one ``rsig`` entry per antenna that heard the
    packet. We keep the antenna with the best SNR (then the best RSSI): it is the one
    that decoded the frame most reliably, and ADR decisions upstream want the best link.
    """
    if "rssi" in rxpk and "lsnr" in rxpk:
        return _field_number(rxpk, "rssi"), _field_number(rxpk, "lsnr")
    rsig = rxpk.get("rsig")
    antennas = [a for a in map(_antenna, rsig) if a is not None] if isinstance(rsig, list) else []
    if not antennas:
        _fail("rxpk has neither 'rssi'/'lsnr' nor an 'rsig' array with rssic/lsnr", "bad_rxpk")
    best_rssi, best_snr = max(antennas, key=lambda a: (a[1], a[0]))
    rssi = _field_number(rxpk, "rssi") if "rssi" in rxpk else best_rssi
    snr = _field_number(rxpk, "lsnr") if "lsnr" in rxpk else best_snr
    return rssi, snr


def rxpk_to_frame_parts(
    rxpk: Rxpk, *, gateway_eui: bytes | None = None, backend: str = BACKEND_NAME
) -> tuple[bytes, RxInfo]:
    """The PHYPayload and RF metadata of one LoRa ``rxpk`` (§4).

    Raises DatagramError: ``unsupported_modulation`` for FSK (or anything but LoRa),
    ``bad_rxpk`` for a missing or ill-typed field, ``bad_base64``/``size_mismatch``
    for the payload. A CRC-failed packet is returned with ``crc_ok=False``; dropping
    it is the caller's decision.
    """
    raw: dict[str, Any] = rxpk  # type: ignore[assignment]  # untrusted: check every field
    payload = _rxpk_payload(raw)
    modu = raw.get("modu")
    if not isinstance(modu, str):
        _fail(f"rxpk 'modu' must be a string, got {modu!r}", "bad_rxpk")
    if modu != "LORA":
        _fail(f"modulation {modu[:16]!r} is not supported (LoRa only)", "unsupported_modulation")

    freq_mhz = _field_number(raw, "freq")
    if not 0.0 < freq_mhz < _FREQ_MHZ_MAX:
        _fail(f"rxpk 'freq' {freq_mhz} MHz is out of range", "bad_rxpk")
    # MHz with Hz precision as a float (§4): some values land a hair below the integer
    # (131.667387 * 1e6 == 131667386.99999999), so round rather than truncate.
    freq_hz = round(freq_mhz * 1_000_000)

    datr = raw.get("datr")
    match = _DATR_LORA.fullmatch(datr) if isinstance(datr, str) else None
    if match is None:
        _fail(f"rxpk 'datr' must look like 'SF7BW125', got {datr!r}", "bad_rxpk")
    sf, bw_khz = int(match[1]), int(match[2])
    if sf not in _SF_RANGE or bw_khz not in _BW_KHZ:
        _fail(f"rxpk 'datr' {datr!r} has an impossible SF or bandwidth", "bad_rxpk")

    codr = raw.get("codr")
    if not isinstance(codr, str) or _CODR.fullmatch(codr) is None:
        _fail(f"rxpk 'codr' must look like '4/5', got {codr!r}", "bad_rxpk")

    stat = raw.get("stat")
    if not _is_int(stat) or stat not in (-1, 0, 1):
        _fail(f"rxpk 'stat' must be 1, 0 or -1, got {stat!r}", "bad_rxpk")

    tmst = raw.get("tmst")
    if tmst is not None and not (_is_int(tmst) and 0 <= tmst <= 0xFFFFFFFF):
        _fail(f"rxpk 'tmst' must be a 32-bit unsigned integer, got {tmst!r}", "bad_rxpk")

    time_text = raw.get("time")
    if time_text is not None and not (isinstance(time_text, str) and len(time_text) <= _MAX_TIME_CHARS):
        _fail("rxpk 'time' must be a short string", "bad_rxpk")

    rssi_dbm, snr_db = _signal(raw)
    rx = RxInfo(
        freq_hz=freq_hz,
        rssi_dbm=rssi_dbm,
        snr_db=snr_db,
        sf=sf,
        bw_hz=bw_khz * 1000,
        coding_rate=codr,
        crc_ok=stat == 1,
        backend=backend,
        gateway_eui=gateway_eui.hex() if gateway_eui is not None else None,
        concentrator_tmst_us=tmst,
        gps_time=time_text,
    )
    return payload, rx


def make_rxpk(
    phy_payload: bytes,
    *,
    freq_hz: int,
    sf: int,
    bw_hz: int = 125_000,
    rssi_dbm: float,
    snr_db: float,
    tmst_us: int,
    time_iso: str | None = None,
    coding_rate: str = "4/5",
    crc_ok: bool = True,
    chan: int = 0,
    rfch: int = 0,
) -> Rxpk:
    """The ``rxpk`` a reference packet forwarder would send for this LoRa frame (§4).

    ``tmst_us`` wraps at 2**32 like the concentrator's counter; ``rssi`` is sent as an
    integer and ``lsnr`` with 0.1 dB precision, as §4 specifies.
    """
    if sf not in _SF_RANGE:
        raise ValueError(f"sf must be in 5..12, got {sf}")
    if bw_hz % 1000 or bw_hz // 1000 not in _BW_KHZ:
        raise ValueError(f"bw_hz must be 125000, 250000 or 500000, got {bw_hz}")
    if _CODR.fullmatch(coding_rate) is None:
        raise ValueError(f"coding_rate must look like '4/5', got {coding_rate!r}")
    rxpk: Rxpk = {}
    if time_iso is not None:
        rxpk["time"] = time_iso
    rxpk.update(
        {
            "tmst": tmst_us & 0xFFFFFFFF,
            "chan": chan,
            "rfch": rfch,
            "freq": freq_hz / 1_000_000,
            "stat": 1 if crc_ok else -1,
            "modu": "LORA",
            "datr": f"SF{sf}BW{bw_hz // 1000}",
            "codr": coding_rate,
            "rssi": round(rssi_dbm),
            "lsnr": round(snr_db, 1),
            "size": len(phy_payload),
            "data": base64.b64encode(phy_payload).decode("ascii"),
        }
    )
    return rxpk
