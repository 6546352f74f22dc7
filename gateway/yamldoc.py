"""A parsed YAML document read with key paths: typed getters whose errors say where and why.

Owns ``Node``: one value of a document parsed by ``gateway.textfile``, with the file it came
from and its key path (``rules[2].when.threshold.above``, ``decoder.channels[0].type``). Its
getters check a type (string, integer, number, true/false, list, mapping), bounds and a closed
set of choices; ``mapping`` refuses the keys a section does not allow and requires the others.
Every failure is a ``ConfigError(reason, file=, key_path=)``, one line naming all three::

    /etc/edgegw/rules.yaml: rules[0].for_s: must be >= 0, got -5
    /etc/edgegw/edgegw.yaml: mqtt.prot: unknown key (did you mean 'port'?)
    city.yaml: faults[1].kind: unknown value 'meteor' (expected one of: bad_mic, replay, ...)

The config (``gateway.config``), the rules (``gateway.rules.loader``), device profiles
(``gateway.codec.fields.Spec``, a ``Node`` worded as device_profiles/README.md shows: "must be
an integer, got str '5'") and simulator scenarios (``simulator.scenario``) read their documents
with it. It does not parse YAML (``gateway.textfile``) nor own what a document means: each reader
says which keys exist and checks what needs more than one value.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from typing import Any, Final, Self, TypeVar, overload

from gateway.errors import ConfigError

TOP: Final = "<top>"
"""The key path of a document's top level in messages."""

_ABSENT: Final = object()
_Choice = TypeVar("_Choice", bound=str)


class Node:
    """One value of a parsed YAML document, with the file and the key path it came from.

    Read-only. A getter returns the value checked or raises the ``ConfigError`` naming this node;
    ``fail`` builds one for the checks a reader makes itself. Children (``node["key"]``,
    ``node.get("key")``, ``node.items()``) are nodes of the same class, so a subclass's wording
    (``expected``, ``missing``) holds for the whole document.
    """

    __slots__ = ("file", "path", "value")

    def __init__(self, value: object, *, file: str, path: str = "") -> None:
        self.value = value
        self.file = file
        self.path = path

    # -- errors ---------------------------------------------------------------------------------

    def fail(self, reason: str) -> ConfigError:
        """A ConfigError naming this node (return it, the caller raises)."""
        return ConfigError(reason, file=self.file, key_path=self.path or TOP)

    def expected(self, what: str) -> str:
        """The reason given for a value of the wrong type; ``what`` is "an integer", "a mapping"..."""
        return f"expected {what}, got {show(self.value)}"

    def missing(self, key: str) -> ConfigError:
        """The error for a required ``key`` this mapping lacks, named at the key's own path."""
        return self.fail_at(key, "missing required key")

    def fail_at(self, key: str, reason: str) -> ConfigError:
        """A ConfigError naming ``key`` of this mapping, given in the file or not (a default checked)."""
        return ConfigError(reason, file=self.file, key_path=self.child_path(key))

    def child_path(self, key: object) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    # -- structure ------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """This mapping, its keys checked to be strings."""
        if not isinstance(self.value, dict):
            raise self.fail(self.expected("a mapping"))
        for key in self.value:
            if not isinstance(key, str):
                raise self.fail(f"keys must be strings, got {key!r}")
        return self.value

    def unknown_keys(self, allowed: Collection[str]) -> list[ConfigError]:
        """An error for each key of this mapping not in ``allowed`` (with the closest allowed one)."""
        if not isinstance(self.value, dict):
            raise self.fail(self.expected("a mapping"))
        return [
            ConfigError(
                f"unknown key{_suggest(str(key), allowed)}", file=self.file, key_path=self.child_path(key)
            )
            for key in self.value
            if key not in allowed
        ]

    def mapping(self, required: Collection[str] = (), optional: Collection[str] = ()) -> Self:
        """Check this is a mapping with every ``required`` key and no key outside both; return self."""
        unknown = self.unknown_keys((*required, *optional))
        if unknown:
            raise unknown[0]
        for key in required:
            if not self.has(key):
                raise self.missing(key)
        return self

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def __getitem__(self, key: str) -> Self:
        """The required child ``key``."""
        if not isinstance(self.value, dict):
            raise self.fail(self.expected("a mapping"))
        if key not in self.value:
            raise self.missing(key)
        return type(self)(self.value[key], file=self.file, path=self.child_path(key))

    @overload
    def get(self, key: str) -> Self | None: ...

    @overload
    def get(self, key: str, default: object) -> Self: ...

    def get(self, key: str, default: object = _ABSENT) -> Self | None:
        """The child ``key``; when it is absent, None or a node holding ``default`` at the key's path."""
        if self.has(key):
            return self[key]
        if default is _ABSENT:
            return None
        return type(self)(default, file=self.file, path=self.child_path(key))

    def items(self) -> list[Self]:
        """The elements of this list."""
        if not isinstance(self.value, list):
            raise self.fail(self.expected("a list"))
        return [
            type(self)(item, file=self.file, path=f"{self.path}[{i}]") for i, item in enumerate(self.value)
        ]

    def entries(self) -> list[tuple[str, Self]]:
        """The (key, child) pairs of this mapping, keys checked to be strings."""
        return [(key, self[key]) for key in self.as_dict()]

    # -- values ---------------------------------------------------------------------------------

    def as_str(
        self, *, pattern: re.Pattern[str] | None = None, hint: str = "", non_empty: bool = False
    ) -> str:
        value = self.value
        if not isinstance(value, str) or (non_empty and not value):
            # YAML 1.1 reads on/off/yes/no as true/false: the usual reason for a boolean here.
            extra = " (quote YAML words like on/off/yes/no)" if isinstance(value, bool) else ""
            raise self.fail(self.expected("a non-empty string" if non_empty else "a string") + extra)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(f"{value!r} is not valid{': ' + hint if hint else ''}")
        return value

    def as_int(self, low: int | None = None, high: int | None = None) -> int:
        value = self.value
        # bool is an int in Python; YAML turns `yes` into True, which is never meant as 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(self.expected("an integer"))
        self._check_bounds(value, low, high)
        return value

    def as_number(self, low: float | None = None, high: float | None = None) -> int | float:
        """An integer or a finite float, as written: ``2`` stays an int (profiles compute as JavaScript)."""
        value = self.value
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(self.expected("a number"))
        if isinstance(value, float) and not math.isfinite(value):
            # YAML has .nan and .inf; NaN passes every bound (all comparisons with it are false).
            raise self.fail(self.expected("a finite number"))
        self._check_bounds(value, low, high)
        return value

    def as_float(self, low: float | None = None, high: float | None = None) -> float:
        number = self.as_number(low, high)
        try:
            return float(number)
        except OverflowError:  # a YAML integer has no size limit; a float has
            raise self.fail(self.expected("a finite number")) from None

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(self.expected("true or false"))
        return self.value

    def as_choice(self, choices: Collection[_Choice]) -> _Choice:
        """One of ``choices`` (a tuple of a ``Literal``'s words, a table's keys), typed as they are."""
        text = self.as_str()
        for choice in choices:
            if choice == text:
                return choice
        raise self.fail(f"unknown value {text!r} (expected one of: {', '.join(choices)})")

    def _check_bounds(self, value: float, low: float | None, high: float | None) -> None:
        if low is not None and high is not None:
            if not low <= value <= high:
                raise self.fail(f"{value} is out of range {_number(low)}..{_number(high)}")
        elif low is not None and value < low:
            raise self.fail(f"must be >= {_number(low)}, got {value}")
        elif high is not None and value > high:
            raise self.fail(f"must be <= {_number(high)}, got {value}")


def show(value: object) -> str:
    """``value`` for a message: its repr, cut at 40 characters (a pasted blob stays one line)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(bound: float) -> str:
    # 0.0 and 3600.0 read as 0 and 3600; 0.05 stays 0.05.
    return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)


def _suggest(key: str, allowed: Collection[str]) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1)
    if match:
        return f" (did you mean {match[0]!r}?)"
    return f" (expected one of: {', '.join(allowed)})" if allowed else " (none allowed here)"
