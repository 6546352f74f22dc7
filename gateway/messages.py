"""Values that cross stage boundaries.

Owns the small frozen types that one stage hands to the next (radio → lorawan →
codec → outbox → uplink) and the identifier value types. It owns no behaviour
beyond validation and formatting: parsing lives in each stage's wire module.

Identifiers print as lowercase hex, most-significant byte first, as people write
them (ARCHITECTURE.md §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Literal, Self

TimeQuality = Literal["gps", "ntp", "unsynced"]
RecordKind = Literal["reading", "alert", "event"]


def _parse_hex(text: str, size: int, what: str) -> bytes:
    cleaned = text.strip().replace(":", "").replace("-", "").replace(" ", "")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ValueError(f"{what} must be hex, got {text!r}") from exc
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class _HexId:
    """An identifier of a fixed number of bytes, stored MSB first."""

    value: bytes
    SIZE: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if len(self.value) != self.SIZE:
            raise ValueError(f"{type(self).__name__} must be {self.SIZE} bytes, got {len(self.value)}")

    @classmethod
    def from_hex(cls, text: str) -> Self:
        return cls(_parse_hex(text, cls.SIZE, cls.__name__))

    def __str__(self) -> str:
        return self.value.hex()


@dataclass(frozen=True, slots=True)
class DevEui(_HexId):
    """A device's 64-bit IEEE EUI."""

    SIZE: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class JoinEui(_HexId):
    """A join server's (AppEUI's) 64-bit EUI."""

    SIZE: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class DevAddr(_HexId):
    """A 32-bit device address assigned per session."""

    SIZE: ClassVar[int] = 4


@dataclass(frozen=True, slots=True)
class AesKey(_HexId):
    """A 128-bit AES key. ``repr`` and ``str`` never show it; use ``reveal()``."""

    SIZE: ClassVar[int] = 16

    def __str__(self) -> str:
        return "<secret>"

    def __repr__(self) -> str:
        return "AesKey(<secret>)"

    def reveal(self) -> str:
        """The key as hex: only for commands that were explicitly asked to show keys."""
        return self.value.hex()


@dataclass(frozen=True, slots=True)
class RxInfo:
    """RF metadata of one received frame, as reported by the radio backend."""

    freq_hz: int
    rssi_dbm: float
    snr_db: float
    sf: int
    bw_hz: int
    coding_rate: str
    crc_ok: bool
    backend: str
    gateway_eui: str | None = None
    concentrator_tmst_us: int | None = None
    gps_time: str | None = None


@dataclass(frozen=True, slots=True)
class RadioFrame:
    """A raw PHYPayload heard by a radio backend, with its metadata and receive time."""

    phy_payload: bytes
    rx: RxInfo
    received_at_s: float
    """Gateway wall-clock time (Unix seconds) at reception."""
    received_mono_s: float
    """Monotonic clock at reception, for correcting timestamps taken before clock sync."""


class MType(IntEnum):
    """LoRaWAN message types (MHDR bits 7..5), LoRaWAN 1.0.4 §4.2.1."""

    JOIN_REQUEST = 0
    JOIN_ACCEPT = 1
    UNCONFIRMED_DATA_UP = 2
    UNCONFIRMED_DATA_DOWN = 3
    CONFIRMED_DATA_UP = 4
    CONFIRMED_DATA_DOWN = 5
    REJOIN_REQUEST = 6
    PROPRIETARY = 7


@dataclass(frozen=True, slots=True)
class UplinkData:
    """An authenticated, decrypted LoRaWAN data uplink from a known device."""

    dev_eui: DevEui
    dev_addr: DevAddr
    session_tag: str
    """Short hex tag that differs between sessions of one device (stable for a session)."""
    profile: str
    fcnt: int
    fport: int | None
    payload: bytes
    confirmed: bool
    frame: RadioFrame


class Priority(IntEnum):
    """Outbox priority classes of a ``Record``: higher leaves first and is evicted last (docs/outbox.md)."""

    DIAGNOSTICS = 10
    EVENT = 30
    READING = 50
    """Readings and aggregates."""
    ALERT = 100
    """Published one per message on the ``alert`` topic, ahead of any backlog."""


@dataclass(frozen=True, slots=True)
class Record:
    """What the outbox stores and the uplink publishes: one JSON-ready object plus routing facts.

    ``body`` has exactly the record shape of ARCHITECTURE.md §3.2.
    """

    record_id: str
    kind: RecordKind
    priority: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Alert:
    """One edge of an alert episode (issue 6): ``raised`` when a rule's condition starts,
    ``cleared`` when it ends. Both edges share ``alert_id``; ``record_id`` differs per edge,
    so a duplicate of either edge can be dropped upstream."""

    alert_id: str
    state: Literal["raised", "cleared"]
    rule_id: str
    dev_eui: str
    severity: Literal["info", "warning", "critical"]
    at_s: float
    """Gateway time (Unix seconds) of the reading or tick that opened or closed the episode."""
    value: float | None = None
    message: str = ""

    @property
    def record_id(self) -> str:
        return f"{self.alert_id}-{self.state}"


@dataclass(frozen=True, slots=True)
class SessionCounter:
    """The new frame-counter state of a session, committed atomically with its record."""

    dev_eui: DevEui
    session_tag: str
    fcnt_up: int


class TxStatus(StrEnum):
    """Outcome of a transmission request (Semtech TX_ACK error names where they exist)."""

    SENT = "sent"
    TOO_LATE = "too_late"
    TOO_EARLY = "too_early"
    COLLISION_PACKET = "collision_packet"
    COLLISION_BEACON = "collision_beacon"
    TX_FREQ = "tx_freq"
    TX_POWER = "tx_power"
    GPS_UNLOCKED = "gps_unlocked"
    DUTY_CYCLE = "duty_cycle"
    """Refused by our own EU868 duty-cycle accounting before reaching the radio."""
    NO_ROUTE = "no_route"
    """No radio path to send it (e.g. no PULL_DATA seen from that packet forwarder)."""
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A downlink for the radio layer: bytes plus RF parameters and when to send them.

    ``send_at_tmst_us`` is the concentrator timestamp to transmit at (class A RX1/RX2:
    the uplink's ``concentrator_tmst_us`` + RxDelay); None means immediately (class C).
    ``gateway_eui`` picks the packet forwarder that heard the uplink (Semtech UDP).
    """

    phy_payload: bytes
    freq_hz: int
    sf: int
    bw_hz: int = 125_000
    coding_rate: str = "4/5"
    power_dbm: float = 14.0
    send_at_tmst_us: int | None = None
    gateway_eui: str | None = None
    invert_polarity: bool = True
    """LoRaWAN downlinks use inverted IQ (LoRaWAN 1.0.4 §2.1 / Regional Parameters)."""
    dev_eui: DevEui | None = None
    """For logs and counters only."""
    send_at_gps_ms: int | None = None
    """GPS time (ms since the GPS epoch) to transmit at, for class B (Semtech ``tmms``);
    used only when ``send_at_tmst_us`` is None."""


@dataclass(frozen=True, slots=True)
class TxResult:
    status: TxStatus
    detail: str = ""
    airtime_ms: float | None = None
