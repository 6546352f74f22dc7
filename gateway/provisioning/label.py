"""Printable device labels: the TR005 QR symbol plus human-readable lines, as PNG or SVG.

Owns drawing only: the QR text comes from ``qr.py`` and the symbol's modules from
``segno`` (pure Python). PNG is written here with ``zlib`` and a small built-in
5x7 font, so labels need no imaging library on the gateway. It does not own
what the label says (the CLI passes the lines).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from xml.sax.saxutils import escape

import segno

# 5x7 glyphs, one string of 7 rows of 5 columns each ('#' = ink). Uppercase only.
_FONT: dict[str, str] = {
    "0": ".###.#...##..###.#.###..##...#.###.",
    "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####",
    "3": "#####...#...#......#....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.",
    "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.",
    "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.",
    "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#",
    "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.",
    "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####",
    "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####",
    "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.",
    "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#",
    "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#",
    "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.",
    "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#",
    "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.",
    "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.",
    "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.",
    "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..",
    "Z": "#####....#...#...#...#...#....#####",
    ":": "......##...##.......##...##........",
    "-": "...............#####...............",
    "/": "....#....#...#...#...#...#....#....",
    ".": "..............................##...",
    " ": "...................................",
}
_GLYPH_W, _GLYPH_H = 5, 7


@dataclass(frozen=True, slots=True)
class Label:
    """A QR text and the lines printed under the symbol."""

    qr_text: str
    lines: tuple[str, ...]


def qr_matrix(text: str) -> list[list[bool]]:
    """The symbol's modules (True = dark), error correction M, without quiet zone."""
    symbol = segno.make(text, error="m", micro=False, boost_error=False)
    return [[bool(cell) for cell in row] for row in symbol.matrix]


def to_png(label: Label, *, module_px: int = 6, quiet_modules: int = 4) -> bytes:
    """A 1-bit greyscale PNG: the symbol (with its quiet zone) above the text lines."""
    matrix = qr_matrix(label.qr_text)
    size = len(matrix)
    text_scale = max(1, module_px // 3)
    line_h = (_GLYPH_H + 3) * text_scale
    text_w = max((len(line) * (_GLYPH_W + 1) * text_scale for line in label.lines), default=0)
    qr_w = (size + 2 * quiet_modules) * module_px
    width = max(qr_w, text_w + 2 * module_px * quiet_modules // 2)
    height = qr_w + len(label.lines) * line_h + (module_px * 2 if label.lines else 0)
    ink = [[False] * width for _ in range(height)]
    x0 = (width - qr_w) // 2 + quiet_modules * module_px
    y0 = quiet_modules * module_px
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                for dy in range(module_px):
                    line = ink[y0 + r * module_px + dy]
                    for dx in range(module_px):
                        line[x0 + c * module_px + dx] = True
    y = qr_w
    for text in label.lines:
        x = (width - len(text) * (_GLYPH_W + 1) * text_scale) // 2
        for char in text.upper():
            glyph = _FONT.get(char, _FONT[" "])
            for gy in range(_GLYPH_H):
                for gx in range(_GLYPH_W):
                    if glyph[gy * _GLYPH_W + gx : gy * _GLYPH_W + gx + 1] == "#":
                        for sy in range(text_scale):
                            for sx in range(text_scale):
                                ink[y + gy * text_scale + sy][x + gx * text_scale + sx] = True
            x += (_GLYPH_W + 1) * text_scale
        y += line_h
    return _encode_png(ink, width, height)


def _encode_png(ink: list[list[bool]], width: int, height: int) -> bytes:
    # PNG (ISO/IEC 15948): 8-bit greyscale, filter type 0 on every row.
    raw = bytearray()
    for row in ink:
        raw.append(0)
        raw.extend(0 if dark else 255 for dark in row)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def to_svg(label: Label, *, module_mm: float = 0.5, quiet_modules: int = 4) -> str:
    """An SVG in millimetres (prints at the intended size): the symbol and the text lines."""
    matrix = qr_matrix(label.qr_text)
    size = len(matrix)
    qr_mm = (size + 2 * quiet_modules) * module_mm
    font_mm = 3.0
    width = max(qr_mm, max((len(line) for line in label.lines), default=0) * font_mm * 0.62 + 4)
    height = qr_mm + len(label.lines) * font_mm * 1.4 + 2
    x0 = (width - qr_mm) / 2 + quiet_modules * module_mm
    y0 = quiet_modules * module_mm
    path = []
    m = module_mm
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                path.append(f"M{x0 + c * m:.3f} {y0 + r * m:.3f}h{m}v{m}h-{m}z")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.2f}mm" height="{height:.2f}mm" '
        f'viewBox="0 0 {width:.2f} {height:.2f}">',
        f"<title>{escape(label.qr_text)}</title>",
        f'<rect width="{width:.2f}" height="{height:.2f}" fill="#fff"/>',
        f'<path fill="#000" d="{"".join(path)}"/>',
    ]
    y = qr_mm + font_mm
    for line in label.lines:
        parts.append(
            f'<text x="{width / 2:.2f}" y="{y:.2f}" font-family="monospace" font-size="{font_mm}" '
            f'text-anchor="middle">{escape(line)}</text>'
        )
        y += font_mm * 1.4
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
