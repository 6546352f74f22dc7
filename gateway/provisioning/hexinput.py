"""Hex identifiers and keys as installers type them (CSV cells, ``--appkey``): the refusal's wording.

Owns what a refusal says: the value's kind, the expected length in hex digits and what it is
(32 for a 128-bit key, 16 for an EUI-64, 8 for a DevAddr), where the first character that is not
hex sits — and never the value itself, which may be a key pasted into the wrong column. The
parsing is ``gateway.messages`` (``from_hex``); this module only words its refusals.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Final, Protocol, Self

from gateway.messages import AesKey, DevAddr, DevEui, JoinEui

_WHAT: Final[Mapping[object, str]] = {
    AesKey: "a 128-bit key",
    DevEui: "an EUI-64",
    JoinEui: "an EUI-64",
    DevAddr: "a 32-bit DevAddr",
}
# As gateway.messages: people write EUIs as 70-B3-D5-..., 70:b3:..., or in groups of four.
_SEPARATORS: Final = ":- "


class HexValue(Protocol):
    SIZE: int

    @classmethod
    def from_hex(cls, text: str) -> Self: ...


def parse(kind: type[HexValue], text: str) -> HexValue:
    """``kind.from_hex(text)``; ValueError with ``describe_error``'s wording (no echo of ``text``)."""
    try:
        return kind.from_hex(text)
    except ValueError:
        raise ValueError(describe_error(kind, text)) from None


def describe_error(kind: type[HexValue], text: str) -> str:
    """Why ``text`` is not a ``kind``: expected length and the first bad position, never the value."""
    digits = 2 * kind.SIZE
    what = _WHAT.get(kind, f"{kind.SIZE} bytes")
    cleaned = "".join(c for c in text.strip() if c not in _SEPARATORS)
    for position, char in enumerate(cleaned, start=1):
        if char not in string.hexdigits:
            return (
                f"{kind.__name__} must be hex: {digits} hex digits for {what}; "
                f"character {position} is not a hex digit (0-9, a-f)"
            )
    return (
        f"{kind.__name__} must be {kind.SIZE} bytes ({digits} hex digits for {what}), "
        f"got {len(cleaned)} digits"
    )
