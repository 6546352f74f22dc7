"""Labels: the PNG written here carries exactly segno's QR modules; the SVG is well-formed with the EUIs."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib

from gateway.provisioning import label

TEXT = "LW:D0:70B3D57ED0000001:A84041035660E3AA:00000000:C1D2E"


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[r * (width + 1) + 1 : (r + 1) * (width + 1)] for r in range(height)]
    assert all(raw[r * (width + 1)] == 0 for r in range(height))
    return width, height, rows


def test_png_modules_match_the_qr_matrix_and_text_is_drawn() -> None:
    drawing = label.Label(TEXT, ("DEVEUI A84041035660E3AA", "JOINEUI 70B3D57ED0000001"))
    width, height, rows = decode_png(label.to_png(drawing, module_px=6, quiet_modules=4))
    matrix = label.qr_matrix(TEXT)
    size = len(matrix)
    qr_w = (size + 8) * 6
    x0 = (width - qr_w) // 2 + 24
    for r in range(size):
        for c in range(size):
            pixel = rows[24 + r * 6 + 3][x0 + c * 6 + 3]
            assert (pixel == 0) == matrix[r][c], (r, c)
    assert height > qr_w and any(0 in row for row in rows[qr_w:])  # text below the symbol


def test_svg_is_well_formed_and_names_the_device() -> None:
    svg = label.to_svg(label.Label(TEXT, ("DevEUI A84041035660E3AA", "site <a&b>")))
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["DevEUI A84041035660E3AA", "site <a&b>"]
    assert root.attrib["width"].endswith("mm")
    dark = sum(sum(row) for row in label.qr_matrix(TEXT))
    path = next(root.iter("{http://www.w3.org/2000/svg}path")).attrib["d"]
    assert path.count("M") == dark
