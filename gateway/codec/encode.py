"""Downlink encoders of a profile: named commands with typed parameters → payload bytes.

Owns the ``downlink`` section of a profile: each command names its parameters
(integers with a range, numbers with a range, enums of words) and the bytes it
sends, as a list of constant hex and parameter items (``as: uint16``, ``endian``,
``mul``, a named ``transform``), optionally followed by a named checksum. It is
compiled once at load; ``Command.encode(values)`` checks every value and returns
the bytes, raising ``EncodeError`` (reason ``bad_command``) otherwise.

It does not own scheduling or sending downlinks (the downlink scheduler), nor who
may ask for a command (fleet). There is no eval: transforms and checksums are a
closed table of named, tested functions.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.codec.derive import dali_percent_to_level
from gateway.codec.fields import ENDIANS, INT_CODES, Spec
from gateway.crc import crc16_modbus
from gateway.errors import EncodeError

logger = logging.getLogger(__name__)


CHECKSUMS: Final[Mapping[str, Callable[[bytes], bytes]]] = {
    # Decentlab appends the CRC most significant byte first (read_int in the same file).
    "crc16_modbus_be": lambda data: crc16_modbus(data).to_bytes(2, "big"),
}
TRANSFORMS: Final[Mapping[str, Callable[[Any], int]]] = {
    "dali_percent_to_level": dali_percent_to_level,
}
_PARAM_TYPES: Final = ("int", "number", "enum")
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Downlink:
    """One encoded downlink: the FPort and the application payload."""

    fport: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Param:
    """A command parameter: ``int`` or ``number`` within [low, high], or ``enum`` of words."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: Mapping[str, int] = field(default_factory=dict)
    description: str = ""

    def check(self, value: object) -> int | float:
        """The value to encode, or EncodeError naming the parameter and why."""
        if self.kind == "enum":
            if not isinstance(value, str) or value not in self.choices:
                raise EncodeError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
            return self.choices[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EncodeError(f"{self.name} must be a number, not {value!r}")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise EncodeError(f"{self.name} must be an integer, not {value!r}")
            value = int(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise EncodeError(f"{self.name}={value} is out of range {_fmt(self.low)}..{_fmt(self.high)}")
        return value


def _fmt(bound: float | None) -> str:
    # 10000000, not 1e+07: a technician reads the range off the message.
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


_Piece = Callable[[Mapping[str, int | float]], bytes]


@dataclass(frozen=True, slots=True)
class Command:
    """A named downlink command, compiled."""

    name: str
    description: str
    params: tuple[Param, ...]
    _pieces: tuple[_Piece, ...] = field(repr=False, compare=False)
    _checksum: Callable[[bytes], bytes] | None = field(default=None, repr=False, compare=False)

    def encode(self, values: Mapping[str, object]) -> bytes:
        """The payload for these parameter values; EncodeError on a missing, extra or bad value."""
        known = {param.name for param in self.params}
        extra = sorted(set(values) - known)
        if extra:
            raise EncodeError(f"{self.name} takes no parameter {', '.join(extra)}")
        checked: dict[str, int | float] = {}
        for param in self.params:
            if param.name not in values:
                raise EncodeError(f"{self.name} needs {param.name}")
            checked[param.name] = param.check(values[param.name])
        payload = b"".join(piece(checked) for piece in self._pieces)
        if self._checksum is not None:
            payload += self._checksum(payload)
        return payload


@dataclass(frozen=True, slots=True)
class EncodeExample:
    """A command with parameter values and the bytes it must give."""

    command: str
    params: Mapping[str, object]
    payload: bytes
    source: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Downlinks:
    """A profile's downlink section, compiled."""

    fport: int
    commands: Mapping[str, Command]
    examples: tuple[EncodeExample, ...]


def compile_downlink(spec: Spec, default_fport: int | None) -> Downlinks:
    spec.mapping(required=("commands",), optional=("fport", "examples", "description"))
    fport_spec = spec.get("fport")
    fport = fport_spec.as_int(1, 223) if fport_spec is not None else default_fport
    if fport is None:
        raise spec.fail("needs an 'fport' (here or lorawan.downlink_fport)")
    commands: dict[str, Command] = {}
    for item in spec["commands"].items():
        command = _compile_command(item)
        if command.name in commands:
            raise item["name"].fail(f"duplicate command {command.name!r}")
        commands[command.name] = command
    if not commands:
        raise spec["commands"].fail("must list at least one command")
    examples: list[EncodeExample] = []
    examples_spec = spec.get("examples")
    for item in examples_spec.items() if examples_spec is not None else ():
        item.mapping(required=("command", "payload", "source"), optional=("params", "description"))
        name = item["command"].as_choice(commands)
        params_spec = item.get("params")
        params: dict[str, object] = {}
        if params_spec is not None:
            params_spec.mapping(optional=tuple(p.name for p in commands[name].params))
            assert isinstance(params_spec.value, dict)
            params = dict(params_spec.value)
        payload = _hex(item["payload"])
        description = item.get("description")
        examples.append(
            EncodeExample(
                command=name,
                params=params,
                payload=payload,
                source=item["source"].as_str(),
                description=description.as_str() if description is not None else "",
            )
        )
    return Downlinks(fport=fport, commands=commands, examples=tuple(examples))


def _hex(spec: Spec) -> bytes:
    text = spec.as_str()
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise spec.fail(f"is not hex: {text!r}") from exc


def _compile_command(spec: Spec) -> Command:
    spec.mapping(required=("name", "bytes"), optional=("params", "description", "checksum"))
    name = spec["name"].as_str(pattern=_NAME_RE, hint="lowercase letters, digits and _")
    params: dict[str, Param] = {}
    params_spec = spec.get("params")
    for item in params_spec.items() if params_spec is not None else ():
        param = _compile_param(item)
        if param.name in params:
            raise item["name"].fail(f"duplicate parameter {param.name!r}")
        params[param.name] = param
    pieces = tuple(_compile_piece(item, params) for item in spec["bytes"].items())
    if not pieces:
        raise spec["bytes"].fail("must list at least one item")
    used: set[object] = set()
    for item in spec["bytes"].items():
        if isinstance(item.value, dict):
            used.add(item.value.get("param"))
            packed = item.value.get("pack")
            if isinstance(packed, list):
                used.update(part.get("param") for part in packed if isinstance(part, dict))
    for param_name in params:
        if param_name not in used:
            raise spec["params"].fail(f"parameter {param_name!r} is not used in 'bytes'")
    checksum_spec = spec.get("checksum")
    description = spec.get("description")
    return Command(
        name=name,
        description=description.as_str() if description is not None else "",
        params=tuple(params.values()),
        _pieces=pieces,
        _checksum=CHECKSUMS[checksum_spec.as_choice(CHECKSUMS)] if checksum_spec is not None else None,
    )


def _compile_param(spec: Spec) -> Param:
    spec.mapping(required=("name", "type"), optional=("min", "max", "values", "description"))
    name = spec["name"].as_str(pattern=_NAME_RE, hint="lowercase letters, digits and _")
    kind = spec["type"].as_choice(_PARAM_TYPES)
    description_spec = spec.get("description")
    description = description_spec.as_str() if description_spec is not None else ""
    if kind == "enum":
        for key in ("min", "max"):
            if spec.has(key):
                raise spec[key].fail("not allowed with type enum")
        values_spec = spec["values"]
        if not isinstance(values_spec.value, dict) or not values_spec.value:
            raise values_spec.fail("must be a non-empty mapping of word → integer")
        choices = {
            Spec(word, file=spec.file, path=values_spec.path).as_str(): values_spec[word].as_int(
                0, 0xFFFFFFFF
            )
            for word in values_spec.value
        }
        return Param(name=name, kind=kind, choices=choices, description=description)
    if spec.has("values"):
        raise spec["values"].fail(f"not allowed with type {kind}")
    low_spec = spec.get("min")
    high_spec = spec.get("max")
    low = low_spec.as_number() if low_spec is not None else None
    high = high_spec.as_number() if high_spec is not None else None
    if low is not None and high is not None and low > high:
        raise spec.fail(f"min {low} is above max {high}")
    return Param(name=name, kind=kind, low=low, high=high, description=description)


def _compile_piece(spec: Spec, params: Mapping[str, Param]) -> _Piece:
    if isinstance(spec.value, dict) and "hex" in spec.value:
        spec.mapping(required=("hex",))
        constant = _hex(spec["hex"])

        def piece_constant(values: Mapping[str, int | float]) -> bytes:
            return constant

        return piece_constant
    if isinstance(spec.value, dict) and "pack" in spec.value:
        return _compile_pack(spec, params)
    spec.mapping(required=("param", "as"), optional=("endian", "mul", "transform"))
    param_name = spec["param"].as_choice(tuple(params))
    fmt = INT_CODES[spec["as"].as_choice(INT_CODES)]
    endian_spec = spec.get("endian")
    if struct.calcsize(fmt) > 1 and endian_spec is None:
        raise spec.fail("a multi-byte item needs 'endian: le' or 'endian: be'")
    packer = struct.Struct(ENDIANS[endian_spec.as_choice(ENDIANS)] + fmt if endian_spec else fmt)
    mul_spec = spec.get("mul")
    mul = mul_spec.as_number() if mul_spec is not None else 1
    transform_spec = spec.get("transform")
    transform = TRANSFORMS[transform_spec.as_choice(TRANSFORMS)] if transform_spec is not None else None

    def piece_param(values: Mapping[str, int | float]) -> bytes:
        value = values[param_name]
        if transform is not None:
            try:
                value = transform(value)
            except ValueError as exc:
                raise EncodeError(f"{param_name}: {exc}") from exc
        number = round(value * mul)
        try:
            return packer.pack(number)
        except struct.error as exc:
            raise EncodeError(f"{param_name}={value} does not fit {spec['as'].value}") from exc

    return piece_param


_PACK_FORMATS: Final[Mapping[str, str]] = {"uint8": "B", "uint16": "H", "uint32": "I"}


def _compile_pack(spec: Spec, params: Mapping[str, Param]) -> _Piece:
    """``{pack: [{param: p, bits: [lsb, width]}, {value: 1, bits: [3, 1]}], as: uint8}``: one word of bits.

    Milesight EM310-UDL setDistanceAlarmConfig(): condition in bits 0..2, a constant 1 in bit 3
    and alarm_release_enable in bit 7 of one byte. A value wider than its bits is refused.
    """
    spec.mapping(required=("pack", "as"), optional=("endian",))
    kind = spec["as"].as_choice(_PACK_FORMATS)
    fmt = _PACK_FORMATS[kind]
    width_bits = 8 * struct.calcsize(fmt)
    endian_spec = spec.get("endian")
    if width_bits > 8 and endian_spec is None:
        raise spec.fail("a multi-byte item needs 'endian: le' or 'endian: be'")
    packer = struct.Struct(ENDIANS[endian_spec.as_choice(ENDIANS)] + fmt if endian_spec else fmt)
    parts: list[tuple[str | None, int, int, int]] = []  # (param or None, constant, lsb, mask)
    taken = 0
    items = list(spec["pack"].items())
    if not items:
        raise spec["pack"].fail("must list at least one bit field")
    for item in items:
        item.mapping(required=("bits",), optional=("param", "value"))
        pair = list(item["bits"].items())
        if len(pair) != 2:
            raise item["bits"].fail("must be [lsb, width], e.g. [0, 3] for bits 0..2")
        lsb = pair[0].as_int(0, width_bits - 1)
        width = pair[1].as_int(1, width_bits - lsb)
        mask = (1 << width) - 1
        if taken & (mask << lsb):
            raise item["bits"].fail("overlaps an earlier bit field")
        taken |= mask << lsb
        if item.has("param") == item.has("value"):
            raise item.fail("needs exactly one of 'param' or 'value'")
        if item.has("param"):
            param_name = item["param"].as_choice(tuple(params))
            if params[param_name].kind == "number":
                raise item["param"].fail("a packed parameter must be of type int or enum")
            parts.append((param_name, 0, lsb, mask))
        else:
            parts.append((None, item["value"].as_int(0, mask), lsb, mask))
    frozen = tuple(parts)

    def piece_pack(values: Mapping[str, int | float]) -> bytes:
        word = 0
        for param_name, constant, lsb, mask in frozen:
            value = constant if param_name is None else int(values[param_name])
            if not 0 <= value <= mask:
                raise EncodeError(f"{param_name}={value} does not fit {mask.bit_length()} bits")
            word |= value << lsb
        return packer.pack(word)

    return piece_pack
