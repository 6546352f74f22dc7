"""TR005 QR text: parse, build, CRC-16/MODBUS checksum.

Vectors: the parse cases are those of TheThingsNetwork/lorawan-stack
pkg/qrcodegenerator/qrcode/enddevices/lora_alliance_tr005_test.go; the CRC check
value 0x4B37 over "123456789" is CRC-16/MODBUS in the reveng CRC catalogue; the
checksum rule is TR005 v1.0.0 lines 210-214 (quoted in lorawan-stack issue #5289).
"""

from __future__ import annotations

import pytest

from gateway.errors import InputError, QrCodeError
from gateway.messages import DevEui, JoinEui
from gateway.provisioning import qr


def test_crc16_modbus_check_value() -> None:
    assert qr.crc16_modbus(b"123456789") == 0x4B37
    assert qr.crc16_modbus(b"") == 0xFFFF


def test_parse_simple_ttn_vector() -> None:
    code = qr.parse("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42")
    assert str(code.join_eui) == "42ffffffffffffff" and str(code.dev_eui) == "4242ffffffffffff"
    assert code.vendor_id == "42FF" and code.vendor_profile_id == "FF42"
    assert code.checksum_present is False and code.owner_token == ""


def test_parse_extensions_and_empty_extensions() -> None:
    code = qr.parse("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42:O0102:SSERIAL:PPROPRIETARY")
    assert (code.owner_token, code.serial_number, code.proprietary) == ("0102", "SERIAL", "PROPRIETARY")
    empty = qr.parse("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42:O:S:P")
    assert empty.to_text(checksum=False) == "LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF", "not a LoRa Alliance TR005"),
        ("LW:D0:42FFFFFFFF:4242FFFFFFFFFFFF:42FFFF42", "JoinEUI field"),
        ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42AABB", "ProfileID field must be 8 hex"),
        ("LW:D1:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42", "unsupported TR005 schema"),
        ("hello world", "not a LoRa Alliance TR005"),
        ("LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42:CZZZZ", "CheckSum must be 4 hex"),
    ],
)
def test_bad_codes_raise_input_errors(text: str, message: str) -> None:
    with pytest.raises(QrCodeError, match=message) as info:
        qr.parse(text)
    assert isinstance(info.value, InputError)


def test_make_writes_uppercase_with_checksum_last_and_round_trips() -> None:
    code = qr.DeviceQr(
        join_eui=JoinEui.from_hex("70b3d57ed0000001"),
        dev_eui=DevEui.from_hex("a84041035660e3aa"),
        profile_id="000a0001",
        serial_number="SN42",
    )
    text = code.to_text()
    body = "LW:D0:70B3D57ED0000001:A84041035660E3AA:000A0001:SSN42"
    assert text == f"{body}:C{qr.crc16_modbus(body.encode()):04X}"
    back = qr.parse(text)
    assert back.checksum_present and back.dev_eui == code.dev_eui and back.serial_number == "SN42"
    assert back.to_text() == text
    # Hex case is free when there is no checksum (the checksum covers the exact characters).
    assert qr.parse(body.lower()).dev_eui == code.dev_eui


def test_bad_checksum_is_refused_with_both_values() -> None:
    body = "LW:D0:70B3D57ED0000001:A84041035660E3AA:000A0001"
    good = qr.crc16_modbus(body.encode())
    with pytest.raises(QrCodeError, match=f"gives C{good:04X}") as info:
        qr.parse(f"{body}:C{good ^ 1:04X}")
    assert info.value.reason == "bad_qr_checksum"
    # A single mistyped digit in the DevEUI is caught too.
    typo = body.replace("A840", "A841")
    with pytest.raises(QrCodeError, match="checksum mismatch"):
        qr.parse(f"{typo}:C{good:04X}")


def test_checksum_over_prefix_including_separator_is_also_accepted() -> None:
    # "except the Checksum field itself" read as: everything before the 'C', ':' included.
    body = "LW:D0:70B3D57ED0000001:A84041035660E3AA:000A0001:"
    assert qr.parse(f"{body}C{qr.crc16_modbus(body.encode()):04X}").checksum_present


def test_fields_with_separator_are_refused_at_build_time() -> None:
    with pytest.raises(QrCodeError):
        qr.DeviceQr(JoinEui(bytes(8)), DevEui(bytes(8)), serial_number="a:b")
    with pytest.raises(QrCodeError):
        qr.DeviceQr(JoinEui(bytes(8)), DevEui(bytes(8)), profile_id="xyz")
