"""Printable A4 sheets of device QR labels for ``edgegw qr sheet`` (issue 19): layout and SVG, pure.

Owns where each label goes (a grid of equal cells on an A4 page, in millimetres, cut lines
between them), how big its symbol is drawn, and the SVG text of each page. It does not own the
TR005 text (``gateway.provisioning.qr``), the symbol's modules (``label.qr_matrix``, from
segno), which devices get a label nor writing files (``qr_cmd``).

Each label is one SVG group whose ``<title>`` is the QR text, so a sheet can be checked (and
searched) without a scanner. SVG only: it prints at size from any browser or ``rsvg-convert``;
PDF would need a new dependency (docs/decisions.md keeps the label stack to segno).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gateway.provisioning import label

# A monospace glyph is about 0.6 em wide: used to tell whether a line fits its cell.
_GLYPH_WIDTH_EM = 0.6


@dataclass(frozen=True, slots=True)
class SheetLayout:
    """An A4 page cut into equal cells; the defaults give 5 x 6 = 30 labels of 38 x 44 mm."""

    page_w_mm: float = 210.0
    page_h_mm: float = 297.0
    margin_mm: float = 10.0
    cell_w_mm: float = 38.0
    cell_h_mm: float = 44.0
    max_module_mm: float = 0.8
    """Larger modules scan from further away; smaller ones are used when a symbol would not fit."""
    quiet_modules: int = 4
    """The quiet zone ISO/IEC 18004 asks for around a QR symbol, inside the cell."""
    font_mm: float = 2.2

    @property
    def columns(self) -> int:
        return max(1, int((self.page_w_mm - 2 * self.margin_mm) // self.cell_w_mm))

    @property
    def rows(self) -> int:
        return max(1, int((self.page_h_mm - 2 * self.margin_mm) // self.cell_h_mm))

    @property
    def per_page(self) -> int:
        return self.columns * self.rows


def pages(labels: Sequence[label.Label], layout: SheetLayout | None = None) -> list[str]:
    """The SVG of each page, labels in order, row by row; no labels → no page."""
    layout = layout or SheetLayout()
    n = layout.per_page
    return [_page(labels[start : start + n], layout) for start in range(0, len(labels), n)]


def _page(labels: Sequence[label.Label], layout: SheetLayout) -> str:
    w, h = layout.page_w_mm, layout.page_h_mm
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}mm" height="{h:g}mm" '
        f'viewBox="0 0 {w:g} {h:g}">',
        f'<rect width="{w:g}" height="{h:g}" fill="#fff"/>',
    ]
    for index, drawing in enumerate(labels):
        row, column = divmod(index, layout.columns)
        x = layout.margin_mm + column * layout.cell_w_mm
        y = layout.margin_mm + row * layout.cell_h_mm
        parts.append(_cell(drawing, x, y, layout))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _cell(drawing: label.Label, x_mm: float, y_mm: float, layout: SheetLayout) -> str:
    matrix = label.qr_matrix(drawing.qr_text)
    span_modules = len(matrix) + 2 * layout.quiet_modules
    text_h_mm = len(drawing.lines) * layout.font_mm * 1.4 + 1.0
    m = min(
        layout.max_module_mm, layout.cell_w_mm / span_modules, (layout.cell_h_mm - text_h_mm) / span_modules
    )
    symbol_mm = span_modules * m
    x0 = (layout.cell_w_mm - symbol_mm) / 2 + layout.quiet_modules * m
    y0 = layout.quiet_modules * m
    path = "".join(
        f"M{x0 + c * m:.3f} {y0 + r * m:.3f}h{m:.3f}v{m:.3f}h-{m:.3f}z"
        for r, row in enumerate(matrix)
        for c, dark in enumerate(row)
        if dark
    )
    parts = [
        f'<g transform="translate({x_mm:.2f} {y_mm:.2f})">',
        f"<title>{escape(drawing.qr_text)}</title>",
        # The cut line: light, so that a slightly misaligned cut leaves no black edge on a sticker.
        f'<rect width="{layout.cell_w_mm:g}" height="{layout.cell_h_mm:g}" fill="none" '
        'stroke="#bbb" stroke-width="0.1"/>',
        f'<path fill="#000" d="{path}"/>',
    ]
    baseline = symbol_mm + layout.font_mm
    usable_mm = layout.cell_w_mm - 2.0
    for line in drawing.lines:
        # A line too long for the cell (a long site name) is squeezed to fit rather than cut.
        fit = ""
        if len(line) * layout.font_mm * _GLYPH_WIDTH_EM > usable_mm:
            fit = f' textLength="{usable_mm:g}" lengthAdjust="spacingAndGlyphs"'
        parts.append(
            f'<text x="{layout.cell_w_mm / 2:g}" y="{baseline:.2f}" font-family="monospace" '
            f'font-size="{layout.font_mm:g}" text-anchor="middle"{fit}>{escape(line)}</text>'
        )
        baseline += layout.font_mm * 1.4
    parts.append("</g>")
    return "\n".join(parts)
