"""CRC-16/MODBUS, the one checksum two formats the agent handles use.

TR005 QR codes (LoRa Alliance TR005, the ``C`` field) and Decentlab downlinks
(dl-downlink-codec.js ``crc16``) both append it. Owns only the arithmetic.
"""

from __future__ import annotations


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no final XOR.

    Check value over b"123456789" is 0x4B37 (reveng CRC catalogue, CRC-16/MODBUS).
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
