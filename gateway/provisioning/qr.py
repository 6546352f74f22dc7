"""LoRa Alliance TR005 "LoRaWAN Device Identification QR Codes": the ``LW:D0:...`` text (pure).

Owns parsing and building the QR code *text* and its checksum; no I/O and no
image rendering (``label.py`` draws the label). Format, TR005 v1.0.0 §4 (2020)::

    LW:D0:<JoinEUI 16 hex>:<DevEUI 16 hex>:<ProfileID 8 hex>[:<ext>]...

ProfileID is the LoRa Alliance VendorID (4 hex) followed by the vendor's
profile id (4 hex). Each optional extension is one letter and a value:
``O`` OwnerToken, ``S`` serial number, ``P`` proprietary, ``C`` CheckSum. An
empty extension (``:O``) carries nothing and is ignored; an unknown letter is
kept but ignored, so newer stickers still parse.

CheckSum (TR005 lines 210-214, quoted in TheThingsNetwork/lorawan-stack issue
#5289): "generated using the CRC-16-MODBUS of the full QR content except the
Checksum field itself, and presented in hexadecimal format". We compute it over
the text with the ``:C....`` field removed and write it last, as 4 uppercase hex
digits. Because "except the Checksum field" can also be read as "everything
before the ``C``" (separator included), parsing accepts either reading.

We write hex in uppercase: with uppercase and ``:`` only, the whole text fits the
QR alphanumeric mode (ISO/IEC 18004 §7.4.4), which makes a smaller symbol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.crc import crc16_modbus
from gateway.errors import QrCodeError
from gateway.messages import DevEui, JoinEui

PREFACE = "LW"
SCHEMA_ID = "D0"
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_KNOWN = {"O": "owner_token", "S": "serial_number", "P": "proprietary", "C": "checksum"}


@dataclass(frozen=True, slots=True)
class DeviceQr:
    """The content of one TR005 device QR code."""

    join_eui: JoinEui
    dev_eui: DevEui
    profile_id: str = "00000000"
    """VendorID (4 hex) + VendorProfileID (4 hex), uppercase."""
    owner_token: str = ""
    serial_number: str = ""
    proprietary: str = ""
    checksum_present: bool = False
    """Whether the parsed text carried a CheckSum (always written by ``to_text``)."""

    def __post_init__(self) -> None:
        if not _HEX8.fullmatch(self.profile_id):
            raise QrCodeError(f"ProfileID must be 8 hex digits, got {self.profile_id!r}", reason="bad_qr")
        for name in ("owner_token", "serial_number", "proprietary"):
            value = getattr(self, name)
            if ":" in value or not value.isprintable():
                raise QrCodeError(
                    f"{name} must be printable text without ':', got {value!r}", reason="bad_qr"
                )

    @property
    def vendor_id(self) -> str:
        return self.profile_id[:4].upper()

    @property
    def vendor_profile_id(self) -> str:
        return self.profile_id[4:].upper()

    def to_text(self, *, checksum: bool = True) -> str:
        fields = [
            PREFACE,
            SCHEMA_ID,
            self.join_eui.value.hex().upper(),
            self.dev_eui.value.hex().upper(),
            self.profile_id.upper(),
        ]
        for letter, value in (("O", self.owner_token), ("S", self.serial_number), ("P", self.proprietary)):
            if value:
                fields.append(letter + value)
        text = ":".join(fields)
        if checksum:
            text += f":C{crc16_modbus(text.encode('ascii')):04X}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "join_eui": str(self.join_eui),
            "dev_eui": str(self.dev_eui),
            "profile_id": self.profile_id.upper(),
            "vendor_id": self.vendor_id,
            "vendor_profile_id": self.vendor_profile_id,
            "owner_token": self.owner_token or None,
            "serial_number": self.serial_number or None,
            "proprietary": self.proprietary or None,
            "checksum": "ok" if self.checksum_present else "absent",
        }


def parse(text: str) -> DeviceQr:
    """Parse a scanned ``LW:D0:...`` string; QrCodeError (reason ``bad_qr`` or ``bad_qr_checksum``)."""
    text = text.strip()
    if not text.isascii() or not text.isprintable():
        raise QrCodeError("QR text must be printable ASCII", reason="bad_qr")
    fields = text.split(":")
    if len(fields) < 5 or fields[0].upper() != PREFACE:
        raise QrCodeError(
            f"not a LoRa Alliance TR005 device code (expected LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>...), "
            f"got {text[:40]!r}",
            reason="bad_qr",
        )
    if fields[1].upper() != SCHEMA_ID:
        raise QrCodeError(f"unsupported TR005 schema {fields[1]!r} (only D0 is defined)", reason="bad_qr")
    try:
        join_eui = JoinEui.from_hex(fields[2])
    except ValueError as exc:
        raise QrCodeError(f"JoinEUI field: {exc}", reason="bad_qr") from exc
    try:
        dev_eui = DevEui.from_hex(fields[3])
    except ValueError as exc:
        raise QrCodeError(f"DevEUI field: {exc}", reason="bad_qr") from exc
    if not _HEX8.fullmatch(fields[4]):
        raise QrCodeError(f"ProfileID field must be 8 hex digits, got {fields[4]!r}", reason="bad_qr")
    values: dict[str, str] = {}
    checksum_index: int | None = None
    for index, field in enumerate(fields[5:], start=5):
        if len(field) <= 1:
            continue  # an empty extension carries nothing
        letter = field[0].upper()
        if letter in values:
            raise QrCodeError(f"extension {letter} appears twice", reason="bad_qr")
        if letter in _KNOWN:
            values[letter] = field[1:]
            if letter == "C":
                checksum_index = index
    if checksum_index is not None:
        _check_checksum(text, fields, checksum_index, values["C"])
    return DeviceQr(
        join_eui=join_eui,
        dev_eui=dev_eui,
        profile_id=fields[4].upper(),
        owner_token=values.get("O", ""),
        serial_number=values.get("S", ""),
        proprietary=values.get("P", ""),
        checksum_present=checksum_index is not None,
    )


def _check_checksum(text: str, fields: list[str], index: int, given: str) -> None:
    if not _HEX4.fullmatch(given):
        raise QrCodeError(f"CheckSum must be 4 hex digits, got {given!r}", reason="bad_qr_checksum")
    without = ":".join(fields[:index] + fields[index + 1 :])
    before = ":".join(fields[:index]) + ":"
    candidates = {crc16_modbus(without.encode("ascii")), crc16_modbus(before.encode("ascii"))}
    if int(given, 16) not in candidates:
        expected = crc16_modbus(without.encode("ascii"))
        raise QrCodeError(
            f"QR checksum mismatch: the code says C{given.upper()}, its content gives C{expected:04X} "
            "(mistyped or damaged code; scan it again)",
            reason="bad_qr_checksum",
        )
