"""LoRaWAN 1.0.x PHYPayload: parse any frame; build data frames, join-requests and join-accepts.

Owns the byte layout of the PHYPayload (LoRaWAN 1.0.4 §4): MHDR, the data
frame's FHDR / FPort / FRMPayload / MIC, the join-request fields, and the
outer shape of join-accept, rejoin-request and proprietary frames. ``parse``
is pure and total: for any bytes it returns a value or raises ``FrameError``
with a ``reason`` (``truncated``, ``bad_major``, ``bad_fopts``,
``fopts_with_port0``, ``bad_frame``), never anything else.

``open_join_accept`` decrypts a join-accept with the AppKey and reads its fields
(§6.2.6: AppNonce/JoinNonce, NetID, DevAddr, DLSettings, RxDelay, CFList);
``build_join_accept`` is its inverse.

It does not own the AES and CMAC computations (``crypto``; ``parse`` returns
FRMPayload as on the air and the MIC unverified), the frame counter policy
(``fcnt``), MAC-command parsing (``mac``), or sessions.

Multi-byte identifiers are little-endian on the air (§1.2); the values here
hold them MSB first, as people write them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import FrameError, MicMismatch
from gateway.lorawan.crypto import (
    MIC_BYTES,
    SessionKeys,
    decrypt_join_accept,
    encrypt_join_accept,
    join_accept_mic,
    join_request_mic,
)
from gateway.messages import MType

__all__ = [
    "MAX_PHY_PAYLOAD_BYTES",
    "DataFrame",
    "FCtrl",
    "JoinAccept",
    "JoinAcceptPayload",
    "JoinRequest",
    "PhyPayload",
    "Proprietary",
    "RejoinRequest",
    "build_data_frame",
    "build_join_accept",
    "build_join_request",
    "open_join_accept",
    "parse",
]

logger = logging.getLogger(__name__)

MAX_PHY_PAYLOAD_BYTES = 255
"""The LoRa physical layer carries at most 255 bytes; B0 holds the length in one octet (§4.4)."""

DATA_FRAME_MIN_BYTES = 12
"""MHDR (1) + DevAddr (4) + FCtrl (1) + FCnt (2) + MIC (4)."""
JOIN_REQUEST_BYTES = 23
"""MHDR (1) + JoinEUI (8) + DevEUI (8) + DevNonce (2) + MIC (4), §6.2.4."""
JOIN_ACCEPT_BYTES = (17, 33)
"""MHDR + 12 bytes + MIC, or with the 16-byte CFList (§6.2.6)."""
REJOIN_REQUEST_BYTES = (19, 24)
"""LoRaWAN 1.1 §6.2.4.1: type 0/2 has a 14-byte body, type 1 a 19-byte body."""
_MAX_FOPTS_BYTES = 15


@dataclass(frozen=True, slots=True)
class FCtrl:
    """The FCtrl octet of a data frame (§4.3.1).

    Bit 4 is called ``fpending`` here: in a downlink it is FPending (the server
    has more to send); in an uplink it is ClassB (LoRaWAN 1.0.2+, RFU before).
    Bit 6 is ADRACKReq in an uplink and RFU in a 1.0.x downlink; it is reported
    as ``adr_ack_req`` either way, faithfully to the bit.
    """

    adr: bool
    adr_ack_req: bool
    ack: bool
    fpending: bool
    fopts_len: int

    def to_byte(self) -> int:
        return self.adr << 7 | self.adr_ack_req << 6 | self.ack << 5 | self.fpending << 4 | self.fopts_len


# Every FCtrl octet decodes to one of 256 immutable values: build them once, index per frame.
_FCTRLS = tuple(
    FCtrl(
        adr=bool(octet & 0x80),
        adr_ack_req=bool(octet & 0x40),
        ack=bool(octet & 0x20),
        fpending=bool(octet & 0x10),
        fopts_len=octet & 0x0F,
    )
    for octet in range(256)
)
_MTYPES = tuple(MType)  # MType(i) is slower than a tuple index on the per-frame path
_UPLINK_MTYPES = frozenset((MType.UNCONFIRMED_DATA_UP, MType.CONFIRMED_DATA_UP))
_CONFIRMED_MTYPES = frozenset((MType.CONFIRMED_DATA_UP, MType.CONFIRMED_DATA_DOWN))
_DATA_MTYPES = frozenset(
    (
        MType.UNCONFIRMED_DATA_UP,
        MType.CONFIRMED_DATA_UP,
        MType.UNCONFIRMED_DATA_DOWN,
        MType.CONFIRMED_DATA_DOWN,
    )
)


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A data frame (MType 2..5) as on the air: FRMPayload still encrypted, MIC unverified."""

    mhdr: int
    mtype: MType
    dev_addr: bytes
    """4 bytes, MSB first."""
    fctrl: FCtrl
    fcnt16: int
    """The low 16 bits of the frame counter, as carried in FHDR."""
    fopts: bytes
    fport: int | None
    """None when the frame has no FPort (and so no FRMPayload)."""
    frm_payload: bytes
    """Encrypted, as on the air."""
    mic: bytes
    mic_input: bytes
    """The frame without its MIC (MHDR .. FRMPayload): what the MIC covers."""

    @property
    def uplink(self) -> bool:
        return self.mtype in _UPLINK_MTYPES

    @property
    def confirmed(self) -> bool:
        return self.mtype in _CONFIRMED_MTYPES

    def to_bytes(self) -> bytes:
        return self.mic_input + self.mic


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join-request (§6.2.4); the identifiers are MSB first (little-endian on the air)."""

    join_eui: bytes
    dev_eui: bytes
    dev_nonce: bytes
    mic: bytes
    mic_input: bytes
    """MHDR | JoinEUI | DevEUI | DevNonce as on the air: what the MIC covers."""

    def to_bytes(self) -> bytes:
        return self.mic_input + self.mic


@dataclass(frozen=True, slots=True)
class JoinAccept:
    """A join-accept (§6.2.6); ``encrypted`` is everything after MHDR, MIC included, still encrypted."""

    encrypted: bytes
    mhdr: int = 0x20


@dataclass(frozen=True, slots=True)
class JoinAcceptPayload:
    """A decrypted, MIC-checked LoRaWAN 1.0.x join-accept (§6.2.6); identifiers MSB first."""

    join_nonce: bytes
    """3 bytes: AppNonce (1.0.2) / JoinNonce (1.0.4)."""
    net_id: bytes
    """3 bytes."""
    dev_addr: bytes
    """4 bytes."""
    rx1_dr_offset: int
    """DLSettings bits 6..4."""
    rx2_dr: int
    """DLSettings bits 3..0."""
    rx_delay: int
    """RxDelay bits 3..0 as sent: the RX1 delay in seconds, 0 meaning 1 (§5.7 RXTimingSetupReq)."""
    cflist: tuple[int, ...] | None
    """CFList of type 0 (EU868 and similar): five channel frequencies in Hz (0 = no channel); None if absent
    or of another type (then see ``cflist_raw``)."""
    cflist_raw: bytes
    """The 16 CFList bytes as sent, or b"" without a CFList."""
    opt_neg: bool
    """DLSettings bit 7: set only by LoRaWAN 1.1 servers (RFU in 1.0.x)."""
    mic: bytes

    @property
    def rx_delay_s(self) -> int:
        return self.rx_delay or 1


@dataclass(frozen=True, slots=True)
class RejoinRequest:
    """A LoRaWAN 1.1 rejoin-request, carried opaquely (1.0.x devices never send one)."""

    body: bytes
    """Everything between MHDR and MIC, starting with the rejoin type."""
    mic: bytes


@dataclass(frozen=True, slots=True)
class Proprietary:
    """A proprietary frame (MType 7): its format is private, so the payload is everything after MHDR."""

    mhdr: int
    payload: bytes


PhyPayload = DataFrame | JoinRequest | JoinAccept | RejoinRequest | Proprietary


def parse(phy: bytes) -> PhyPayload:
    """Parse one PHYPayload; raise ``FrameError`` (with a ``reason``) if it cannot be one."""
    size = len(phy)
    if size == 0:
        raise FrameError("empty PHYPayload", reason="truncated")
    if size > MAX_PHY_PAYLOAD_BYTES:
        raise FrameError(f"PHYPayload of {size} bytes exceeds the LoRa maximum of 255", reason="bad_frame")
    mhdr = phy[0]
    # Major (MHDR bits 1..0) is 0 for LoRaWAN R1; other values are frames we cannot read (§4.2.2).
    if mhdr & 0x03:
        raise FrameError(f"unsupported LoRaWAN major version {mhdr & 0x03}", reason="bad_major")
    mtype = _MTYPES[mhdr >> 5]
    if mtype in _DATA_MTYPES:
        return _parse_data(phy, mhdr, mtype)
    if mtype is MType.JOIN_REQUEST:
        return _parse_join_request(phy)
    if mtype is MType.JOIN_ACCEPT:
        _check_size(phy, JOIN_ACCEPT_BYTES, "join-accept")
        return JoinAccept(encrypted=phy[1:], mhdr=mhdr)
    if mtype is MType.REJOIN_REQUEST:
        _check_size(phy, REJOIN_REQUEST_BYTES, "rejoin-request")
        return RejoinRequest(body=phy[1:-MIC_BYTES], mic=phy[-MIC_BYTES:])
    return Proprietary(mhdr=mhdr, payload=phy[1:])


def _check_size(phy: bytes, allowed: tuple[int, ...], what: str) -> None:
    size = len(phy)
    if size < allowed[0]:
        raise FrameError(f"{what} of {size} bytes is shorter than {allowed[0]}", reason="truncated")
    if size not in allowed:
        raise FrameError(f"{what} of {size} bytes; expected one of {allowed}", reason="bad_frame")


def _parse_data(phy: bytes, mhdr: int, mtype: MType) -> DataFrame:
    size = len(phy)
    if size < DATA_FRAME_MIN_BYTES:
        raise FrameError(f"data frame of {size} bytes is shorter than 12", reason="truncated")
    fctrl = _FCTRLS[phy[5]]
    fhdr_end = 8 + fctrl.fopts_len
    mic_start = size - MIC_BYTES
    if fhdr_end > mic_start:
        raise FrameError(f"FOptsLen {fctrl.fopts_len} runs past the end of the frame", reason="bad_fopts")
    fport: int | None = None
    frm_payload = b""
    if fhdr_end < mic_start:
        fport = phy[fhdr_end]
        frm_payload = phy[fhdr_end + 1 : mic_start]
        # MAC commands go either in FOpts or in an FPort 0 payload, never both (§4.3.1.6).
        if fport == 0 and fctrl.fopts_len:
            raise FrameError("FOpts present with FPort 0", reason="fopts_with_port0")
    return DataFrame(
        mhdr=mhdr,
        mtype=mtype,
        dev_addr=phy[4:0:-1],
        fctrl=fctrl,
        fcnt16=phy[6] | phy[7] << 8,
        fopts=phy[8:fhdr_end],
        fport=fport,
        frm_payload=frm_payload,
        mic=phy[mic_start:],
        mic_input=phy[:mic_start],
    )


def _parse_join_request(phy: bytes) -> JoinRequest:
    size = len(phy)
    if size < JOIN_REQUEST_BYTES:
        raise FrameError(f"join-request of {size} bytes; expected 23", reason="truncated")
    if size > JOIN_REQUEST_BYTES:
        raise FrameError(f"join-request of {size} bytes; expected 23", reason="bad_frame")
    return JoinRequest(
        join_eui=phy[8:0:-1],
        dev_eui=phy[16:8:-1],
        dev_nonce=phy[18:16:-1],
        mic=phy[19:],
        mic_input=phy[:19],
    )


def build_data_frame(
    keys: SessionKeys,
    *,
    mtype: MType,
    dev_addr: bytes,
    fcnt32: int,
    fport: int | None,
    payload: bytes,
    fopts: bytes = b"",
    adr: bool = False,
    adr_ack_req: bool = False,
    ack: bool = False,
    fpending: bool = False,
) -> bytes:
    """Build a complete data frame (used by the simulator and for downlinks).

    ``payload`` is plaintext: it is encrypted with the key ``fport`` selects,
    the low 16 bits of ``fcnt32`` go in FHDR, and the MIC (over the full 32-bit
    counter) is appended. Arguments that cannot make a valid frame raise
    ``ValueError``: they are the caller's mistake, not untrusted input.
    """
    if mtype not in _DATA_MTYPES:
        raise ValueError(f"{mtype!r} is not a data frame type")
    if len(dev_addr) != 4:
        raise ValueError(f"dev_addr must be 4 bytes, got {len(dev_addr)}")
    if not 0 <= fcnt32 <= 0xFFFFFFFF:
        raise ValueError(f"fcnt32 out of range: {fcnt32}")
    if len(fopts) > _MAX_FOPTS_BYTES:
        raise ValueError(f"FOpts holds at most 15 bytes, got {len(fopts)}")
    if fport is None:
        if payload:
            raise ValueError("a payload needs an FPort")
    elif not 0 <= fport <= 255:
        raise ValueError(f"fport out of range: {fport}")
    elif fport == 0 and fopts:
        raise ValueError("FOpts must be empty with FPort 0 (§4.3.1.6)")
    uplink = mtype in _UPLINK_MTYPES
    fctrl = FCtrl(adr=adr, adr_ack_req=adr_ack_req, ack=ack, fpending=fpending, fopts_len=len(fopts))
    parts = [
        bytes((int(mtype) << 5, *dev_addr[::-1], fctrl.to_byte(), fcnt32 & 0xFF, (fcnt32 >> 8) & 0xFF)),
        fopts,
    ]
    if fport is not None:
        parts.append(bytes((fport,)))
        parts.append(keys.crypt_frm_payload(payload, dev_addr, fcnt32, uplink, fport))
    msg = b"".join(parts)
    if len(msg) + MIC_BYTES > MAX_PHY_PAYLOAD_BYTES:
        raise ValueError(f"frame of {len(msg) + MIC_BYTES} bytes exceeds the LoRa maximum of 255")
    return msg + keys.data_mic(msg, dev_addr, fcnt32, uplink)


def build_join_request(app_key: bytes, *, join_eui: bytes, dev_eui: bytes, dev_nonce: bytes) -> bytes:
    """Build a join-request (§6.2.4) with its MIC; identifiers MSB first (used by the simulator and tests)."""
    if len(join_eui) != 8 or len(dev_eui) != 8 or len(dev_nonce) != 2:
        raise ValueError("join_eui and dev_eui are 8 bytes, dev_nonce 2 bytes")
    msg = bytes((int(MType.JOIN_REQUEST) << 5,)) + join_eui[::-1] + dev_eui[::-1] + dev_nonce[::-1]
    return msg + join_request_mic(app_key, msg)


_CFLIST_CHANNELS = 5
_CFLIST_TYPE_FREQUENCIES = 0
_CFLIST_UNIT_HZ = 100
"""CFList frequencies: 24-bit little-endian, in units of 100 Hz (Regional Parameters, EU868 CFList)."""


def build_join_accept(
    app_key: bytes,
    *,
    join_nonce: bytes,
    net_id: bytes,
    dev_addr: bytes,
    rx1_dr_offset: int = 0,
    rx2_dr: int = 0,
    rx_delay: int = 1,
    cflist: Sequence[int] | None = None,
) -> bytes:
    """Build an encrypted LoRaWAN 1.0.x join-accept PHYPayload (§6.2.6).

    Identifiers are MSB first; ``cflist`` is up to five frequencies in Hz
    (multiples of 100 Hz; missing ones are sent as 0, "no channel"), sent as a
    CFList of type 0. The MIC is computed over the clear message, then the body
    and MIC are encrypted together with an AES decrypt (``crypto.encrypt_join_accept``).
    Impossible arguments raise ``ValueError``: they are the caller's mistake.
    """
    if len(join_nonce) != 3 or len(net_id) != 3 or len(dev_addr) != 4:
        raise ValueError("join_nonce and net_id are 3 bytes, dev_addr 4 bytes")
    if not 0 <= rx1_dr_offset <= 7 or not 0 <= rx2_dr <= 15 or not 0 <= rx_delay <= 15:
        raise ValueError(f"DLSettings/RxDelay out of range: {rx1_dr_offset}, {rx2_dr}, {rx_delay}")
    msg = b"".join(
        (
            bytes((int(MType.JOIN_ACCEPT) << 5,)),
            join_nonce[::-1],
            net_id[::-1],
            dev_addr[::-1],
            bytes((rx1_dr_offset << 4 | rx2_dr, rx_delay)),
            _cflist_bytes(cflist),
        )
    )
    mic = join_accept_mic(app_key, msg)
    return msg[:1] + encrypt_join_accept(app_key, msg[1:] + mic)


def _cflist_bytes(cflist: Sequence[int] | None) -> bytes:
    if cflist is None:
        return b""
    if len(cflist) > _CFLIST_CHANNELS:
        raise ValueError(f"a CFList holds at most {_CFLIST_CHANNELS} frequencies, got {len(cflist)}")
    padded = [*cflist, *([0] * (_CFLIST_CHANNELS - len(cflist)))]
    out = bytearray()
    for freq_hz in padded:
        units, rest = divmod(freq_hz, _CFLIST_UNIT_HZ)
        if rest or not 0 <= units < 1 << 24:
            raise ValueError(f"CFList frequency {freq_hz} Hz is not a 24-bit multiple of 100 Hz")
        out += units.to_bytes(3, "little")
    out.append(_CFLIST_TYPE_FREQUENCIES)
    return bytes(out)


def open_join_accept(frame: JoinAccept, app_key: bytes) -> JoinAcceptPayload:
    """Decrypt a join-accept with the AppKey and check its MIC; ``MicMismatch`` if it does not verify.

    A wrong AppKey cannot be told from a corrupted frame: both give a bad MIC.
    """
    clear = decrypt_join_accept(app_key, frame.encrypted)
    body, mic = clear[:-MIC_BYTES], clear[-MIC_BYTES:]
    if not hmac.compare_digest(join_accept_mic(app_key, bytes((frame.mhdr,)) + body), mic):
        raise MicMismatch("join-accept MIC does not verify with this AppKey")
    dl_settings = body[10]
    cflist_raw = body[12:]
    cflist: tuple[int, ...] | None = None
    if cflist_raw and cflist_raw[15] == _CFLIST_TYPE_FREQUENCIES:
        cflist = tuple(
            int.from_bytes(cflist_raw[i : i + 3], "little") * _CFLIST_UNIT_HZ for i in range(0, 15, 3)
        )
    return JoinAcceptPayload(
        join_nonce=body[2::-1],
        net_id=body[5:2:-1],
        dev_addr=body[9:5:-1],
        rx1_dr_offset=(dl_settings >> 4) & 0x07,
        rx2_dr=dl_settings & 0x0F,
        rx_delay=body[11] & 0x0F,
        cflist=cflist,
        cflist_raw=cflist_raw,
        opt_neg=bool(dl_settings & 0x80),
        mic=mic,
    )
