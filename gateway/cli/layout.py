"""How wide a view may be, and plain-text tables and labelled lines that keep to it (issue 19).

Owns the width rule of the technician's views and the two shapes they print: a table whose
flexible columns are cut with ``…`` when the line would be too long, and ``label  value`` lines
whose value wraps at spaces under its own column. A word is never split across lines: a word
longer than its room is cut with ``…`` instead, so that ``grep`` finds whole words or nothing.

The width: ``--wide`` → no limit; else ``$COLUMNS`` when it is set (what a shell exports, and
what a test or a script chooses); else the terminal's width when stdout is one; else 80 —
piped output has no terminal to measure, and 80 columns is what docs/cli.md promises. Standard
library only (``shutil``, ``textwrap``): every view imports it, ``status --json`` included.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

DEFAULT_WIDTH: Final = 80
ELLIPSIS: Final = "…"
GAP: Final = "  "
"""Between table columns."""


def width(wide: bool = False) -> int | None:
    """The columns a view may use (module docstring); None: no limit (``--wide``)."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    except (AttributeError, ValueError):  # stdout replaced or closed
        pass
    return DEFAULT_WIDTH


def clip(text: str, room: int | None) -> str:
    """``text`` if it fits in ``room`` characters, else its start and ``…``."""
    if room is None or len(text) <= room:
        return text
    if room <= 0:
        return ""
    return text[: room - 1] + ELLIPSIS


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: its header, its alignment and whether it may be cut."""

    header: str
    right: bool = False
    """Numbers: aligned right."""
    shrink: bool = False
    """May be cut with ``…`` to fit the width; the others keep their full width."""
    min_width: int = 5


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], room: int | None) -> list[str]:
    """The header and one line per row, each at most ``room`` characters (None: no limit).

    Each column is as wide as its widest cell; when the line is too long, the widest column
    that may shrink loses a character, again and again, down to its ``min_width``. If the
    fixed columns alone are too wide, lines are cut at the end (``…``) as a last resort.
    """
    widths = [max([len(c.header), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    if room is not None:
        excess = sum(widths) + len(GAP) * (len(columns) - 1) - room
        while excess > 0:
            candidates = [i for i, c in enumerate(columns) if c.shrink and widths[i] > c.min_width]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for cell, column, size in zip(cells, columns, widths, strict=True):
            text = clip(cell, size)
            parts.append(text.rjust(size) if column.right else text.ljust(size))
        return clip(GAP.join(parts).rstrip(), room)

    return [line([c.header for c in columns]), *(line(row) for row in rows)]


def labelled(label: str, value: str, room: int | None, label_width: int) -> list[str]:
    """``label`` padded to ``label_width``, then ``value`` wrapped at spaces under itself.

    A word longer than the value's room is cut with ``…``, never split.
    """
    head = f"{label:<{label_width}}"
    if room is None:
        return [head + value]
    indent = " " * label_width
    value_room = max(room - label_width, 10)
    words = [clip(word, value_room) for word in value.split(" ")]
    lines = textwrap.wrap(
        " ".join(words),
        width=value_room,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]
    return [head + lines[0], *(indent + rest for rest in lines[1:])]


def colour_enabled() -> bool:
    """Colours only on a terminal, and never with ``$NO_COLOR`` set (no-color.org)."""
    try:
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        return False


def paint(line: str, styles: dict[str, str]) -> str:
    """``line`` with each word of ``styles`` in its ANSI SGR style (e.g. ``"1;31"``: bold red),
    when colours are enabled; the width is measured before, on the plain text."""
    if not colour_enabled():
        return line
    for word, sgr in styles.items():
        line = re.sub(rf"\b{re.escape(word)}\b", f"\x1b[{sgr}m{word}\x1b[0m", line)
    return line
