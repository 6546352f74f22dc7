"""The RAK RUI3 AT-command line protocol in LoRa P2P mode: a pure line parser and command builders.

Owns the bytes exchanged with a RUI3 module (RAK3172, RAK4630, RAK11720, ...) used as a
one-channel LoRa receiver, as documented in RAKwireless' "RUI3 AT Command Manual"
(docs.rakwireless.com/product-categories/software-apis-and-libraries/rui3/at-command-manual):

* host → modem, one command per line ending in CR LF: ``AT+NWM=0`` (P2P mode),
  ``AT+P2P=<freq_hz>:<sf>:<bw_khz>:<cr>:<preamble>:<power_dbm>`` (cr 0..3 = 4/5..4/8),
  ``AT+SYNCWORD=<hex>``, ``AT+IQINVER=<0|1>``, ``AT+PRECV=65534`` (receive continuously
  until ``AT+PRECV=0``), ``AT+PSEND=<hex>``;
* modem → host: a status line per command (``OK``, ``AT_ERROR``, ``AT_PARAM_ERROR``,
  ``AT_BUSY_ERROR`` when asked to send while receiving, ...), and asynchronous events:
  ``+EVT:RXP2P:<rssi>:<snr>:<payload hex>`` for each packet (the RUI3 single-line format,
  RAK "AT Command Migration Guide", LoRa P2P section) and ``+EVT:TXP2P DONE``;
* a boot banner after a reset (e.g. ``Current Work Mode: LoRa P2P.``).

It owns no port, thread or clock (``backend.py`` does) and no LoRaWAN. The parser is a
stream parser: it keeps a partial line between reads, drops over-long lines and
non-text bytes up to the next line end (resynchronising there), and reports each bad
line as a ``Garbage`` event with a reason instead of raising.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_LINE_BYTES: Final = 600  # "+EVT:RXP2P:-120:-20:" + 255 bytes as hex, with room to spare
STATUS_CODES: Final = frozenset(
    {
        "OK",
        "AT_ERROR",
        "AT_PARAM_ERROR",
        "AT_BUSY_ERROR",
        "AT_TEST_PARAM_OVERFLOW",
        "AT_NO_CLASSB_ENABLE",
        "AT_NO_NETWORK_JOINED",
        "AT_RX_ERROR",
        "AT_MODE_NO_SUPPORT",
        "AT_COMMAND_NOT_FOUND",
    }
)
RECEIVE_CONTINUOUS: Final = 65534
RECEIVE_OFF: Final = 0
_RXP2P = re.compile(r"\+EVT:RXP2P:(-?\d{1,3}(?:\.\d+)?):(-?\d{1,3}(?:\.\d+)?):([0-9A-Fa-f]*)")
_BOOT_MARKERS: Final = ("Current Work Mode", "RAKwireless")
_BW_KHZ: Final = frozenset({125, 250, 500})


@dataclass(frozen=True, slots=True)
class RxPacket:
    payload: bytes
    rssi_dbm: float
    snr_db: float


@dataclass(frozen=True, slots=True)
class TxDone:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    code: str

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass(frozen=True, slots=True)
class Boot:
    """A banner line: the modem has (re)started and forgotten its P2P receive state."""

    line: str


@dataclass(frozen=True, slots=True)
class Info:
    """A line we understand and ignore (command echo with ATE on, RX timeout notices)."""

    line: str


@dataclass(frozen=True, slots=True)
class Garbage:
    reason: str
    line: bytes


Event = RxPacket | TxDone | Status | Boot | Info | Garbage


def parse_line(raw: bytes) -> Event | None:
    """One line without its terminator; None for an empty line."""
    try:
        line = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return Garbage("not_text", raw[:64])
    if not line:
        return None
    if not line.isprintable():
        return Garbage("not_text", raw[:64])
    if line in STATUS_CODES:
        return Status(line)
    if line.startswith("+EVT:RXP2P:"):
        match = _RXP2P.fullmatch(line)
        if match is None or len(match[3]) % 2:
            return Garbage("bad_rxp2p", raw[:64])
        return RxPacket(bytes.fromhex(match[3]), float(match[1]), float(match[2]))
    if line.startswith("+EVT:TXP2P"):
        return TxDone() if "DONE" in line else Info(line)
    if line.startswith(("+EVT:", "AT")):
        return Info(line)  # other events (e.g. RXP2P RECEIVE TIMEOUT), or our own command echoed
    if any(marker in line for marker in _BOOT_MARKERS):
        return Boot(line)
    if not line.strip("-=*_ "):
        return Info(line)  # the banner's rulers
    return Garbage("unknown_line", raw[:64])


class LineParser:
    """Bytes in, events out; keeps the partial last line between ``feed`` calls."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_line_bytes
        self._discarding = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buffer += data
        while True:
            end = self._find_end()
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False  # the tail of an over-long line: resync here
                continue
            event = parse_line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._max:
            events.append(Garbage("line_too_long", bytes(self._buffer[:64])))
            self._buffer.clear()
            self._discarding = True
        return events

    def _find_end(self) -> int:
        # RUI3 ends lines with CR LF; accept a bare CR or LF too (resync after noise).
        positions = [p for p in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if p >= 0]
        return min(positions) if positions else -1

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buffer)


# --------------------------------------------------------------------------- commands


def command(text: str) -> bytes:
    return text.encode("ascii") + b"\r\n"


def p2p_config(*, freq_hz: int, sf: int, bw_hz: int, cr_index: int, preamble: int, power_dbm: int) -> bytes:
    """``AT+P2P=freq:sf:bw:cr:preamble:power``; bandwidth in kHz, coding rate 0..3 for 4/5..4/8."""
    if bw_hz % 1000 or bw_hz // 1000 not in _BW_KHZ:
        raise ValueError(f"bandwidth must be 125, 250 or 500 kHz, got {bw_hz} Hz")
    if not 1 <= cr_index <= 4:
        raise ValueError(f"coding rate index must be 1..4, got {cr_index}")
    return command(f"AT+P2P={freq_hz}:{sf}:{bw_hz // 1000}:{cr_index - 1}:{preamble}:{power_dbm}")


def receive(timeout: int) -> bytes:
    return command(f"AT+PRECV={timeout}")


def send(payload: bytes) -> bytes:
    if not 1 <= len(payload) <= 255:
        raise ValueError(f"a P2P payload is 1..255 bytes, got {len(payload)}")
    return command(f"AT+PSEND={payload.hex().upper()}")
