"""Field types of device profiles: the closed set of decoders a profile may name.

Owns two things:

* ``Spec`` — one node of a profile's YAML with its file and key path
  (``decoder.channels[2].type``): ``gateway.yamldoc.Node`` with the profiles' wording,
  so every validation error names where it is and why (``ConfigError(reason, file=, key_path=)``);
* ``compile_field`` — turns one field description (``type``, ``endian``, ``scale``,
  ``offset``, ``enum``, ``format``, ...) into a ``CompiledField``: a byte size and a
  small closure ``read(buf, pos) -> value`` built once at load time, so decoding a
  payload never looks at the YAML again.

It does not own how fields are laid out in a payload (the layout families in
``decode.py``) nor profile identity and examples (``profile.py``). Reads are
bounds-unchecked by design: the layout checks ``pos + size <= len(buf)`` once
per channel before calling ``read``.

Field types (see device_profiles/README.md for the user-facing table):

========== ====== =================================================================
type       bytes  value
========== ====== =================================================================
uint8      1      integer; with ``enum``, ``scale``/``offset``
int8       1      signed integer, same options
uint16     2      needs ``endian: le|be`` (here or the decoder's default)
int16      2      "
uint24     3      " (Milesight ``readUInt24LE``: a report interval in seconds)
uint32     4      "
int32      4      "
hex        size   lowercase hex string of ``size`` bytes (serial numbers); ``case: upper``
                  for upper-case digits; ``size: rest`` (to the end of the record) or
                  ``length: <earlier field>`` for a span the payload decides (read by
                  ``nested.py``: ``CompiledField.span``)
bytes      size   passed to a named ``format`` (version strings); never raw
constant   size   skips ``size`` bytes and yields ``value`` (vendor decoders that
                  ignore a byte and print a fixed word, e.g. Milesight reset_event)
float16    2      IEEE 754 half precision (needs ``endian``)
float32    4      IEEE 754 single precision (needs ``endian``)
bool       1      true/false: one bit (``bits: [lsb, 1]``, default bit 0)
bcd        size   binary-coded decimal digits read as an integer (``12 34`` -> 1234)
========== ====== =================================================================

Options shared by the layouts: ``at`` (byte offset inside the record; fields without
it follow the previous one), ``bits: [lsb, width]`` (an integer's bit field),
``hidden: true`` (a value used only to build other keys, never output) and names
with ``{placeholders}`` filled from hidden values (Milesight WS302 builds ``LAF``
from its weighting byte). ``ops`` is a list of ``{sub|add|mul|div: number}`` applied
in order with JavaScript number semantics, so a vendor formula such as
``(x - 384) * 0.003125 - 50`` gives the very same double as the vendor's decoder;
``{round: N}`` is ``Math.round(x * 10^N) / 10^N``. ``sentinels`` maps reserved raw values
to fixed outputs (NAS dimming level 0xFF = "resume") while other values stay numbers;
``flags`` turns an integer into the list of the names of its set bits. Objects, lists and
conditional fields are ``nested.py``'s.

Formats are a closed table of named, tested functions (``FORMATS``); there is no
``eval`` and no Python in YAML (STYLE.md "Device knowledge is data").
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

from gateway.errors import ConfigError, DecodeError
from gateway.yamldoc import Node

logger = logging.getLogger(__name__)

Reader = Callable[[bytes, int], Any]
SpanReader = Callable[[bytes, int, int], Any]
"""Reads a field whose byte count is known only while decoding: ``(buf, pos, count)``."""
"""Reads one field's value from ``buf`` at ``pos``; the caller has checked the bounds."""

_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- Spec


class Spec(Node):
    """One node of a profile's YAML tree, with the file and key path it came from.

    A ``gateway.yamldoc.Node`` worded as device_profiles/README.md and the profile tools have
    always said it: "must be an integer, got str '5'", and a missing key named at the mapping that
    lacks it ("decoder: missing required key 'family'").
    """

    __slots__ = ()

    def expected(self, what: str) -> str:
        return f"must be {what}, got {_kind(self.value)}"

    def missing(self, key: str) -> ConfigError:
        return self.fail(f"missing required key {key!r}")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# ------------------------------------------------------------------------ formats


def _version_nibbles(raw: bytes) -> str:
    # One byte, major in the high nibble: 0x13 -> "v1.3" (Milesight readProtocolVersion).
    return f"v{raw[0] >> 4}.{raw[0] & 0x0F}"


def _version_hex_bytes(raw: bytes) -> str:
    # Two bytes printed in hex: 01 10 -> "v1.10" (Milesight readFirmwareVersion; README "0110 -> v1.10").
    return f"v{raw[0]:x}.{raw[1]:x}"


def _version_hex_major_hi_nibble(raw: bytes) -> str:
    # Major byte in hex, minor = high nibble of byte 2: 01 10 -> "v1.1" (Milesight readHardwareVersion).
    return f"v{raw[0]:x}.{raw[1] >> 4}"


def _version_major_hi_nibble(raw: bytes) -> str:
    # Major byte in decimal, minor = high nibble of byte 2: 01 10 -> "v1.1"
    # (Milesight readHardwareVersion in the 2025 decoders, e.g. WS302_Decoder.js).
    return f"v{raw[0]}.{raw[1] >> 4}"


def _version_bytes(raw: bytes) -> str:
    # Two bytes printed in decimal: 01 00 -> "v1.0" (Milesight readTslVersion).
    return f"v{raw[0]}.{raw[1]}"


def _version_decimal_dotted(raw: bytes) -> str:
    # Every byte in decimal, joined by dots, no "v": 1f 07 00 4b -> "31.7.0.75"
    # (Milesight VS121_Decoder.js readVersion; README example FF1F1F07004B).
    return ".".join(str(byte) for byte in raw)


def _version_v_decimal_dotted(raw: bytes) -> str:
    # "v", then every byte in decimal joined by dots: 01 02 00 05 -> "v1.2.0.5"
    # (Milesight VS133 readFirmwareVersion: "v" + serial + "." + major + "." + odm + "." + minor).
    return "v" + _version_decimal_dotted(raw)


def _int16_be_tenths_fixed2(raw: bytes) -> str:
    # Signed 16-bit big-endian tenths printed with two decimals: 01 05 -> "26.10", ff 3f -> "-19.30"
    # (Dragino LDDS75_Decoder_V1.1.4.js: `(value/10).toFixed(2)`). A tenth has one decimal, so
    # Python's fixed-point formatting and JavaScript's toFixed(2) agree on every input.
    value = int.from_bytes(raw, "big", signed=True)
    return f"{value / 10:.2f}"


# NAS UL20xx decodeUnixEpoch(): a clock before 2015-01-01 has not been set yet.
_UNSET_CLOCK_BEFORE_S: Final = 1_420_070_400


def _unix_time_le_iso8601(raw: bytes) -> str:
    # uint32 LE Unix seconds as JavaScript's Date.toISOString() prints them ("2020-01-16T15:23:31.000Z");
    # earlier than 2015 -> "invalid_timestamp" (NAS nas-codecs decodeUnixEpoch).
    seconds = int.from_bytes(raw, "little")
    if seconds < _UNSET_CLOCK_BEFORE_S:
        return "invalid_timestamp"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _uint32_le_hex_upper(raw: bytes) -> str:
    # uint32 LE printed as 8 uppercase hex digits: 0d 00 83 50 -> "5083000D" (NAS intToHexStr(x, 8)).
    return f"{int.from_bytes(raw, 'little'):08X}"


def _uint16_le_hex(raw: bytes) -> str:
    # uint16 LE printed as 4 lowercase hex digits, high byte first: 10 00 -> "0010"
    # (Milesight readD2DCommand: bytes[1] then bytes[0], each as two hex digits).
    return f"{int.from_bytes(raw, 'little'):04x}"


def js_to_fixed(value: float, digits: int) -> str:
    """JavaScript ``Number.prototype.toFixed`` for |value| < 1e21: exact decimal, ties away from zero."""
    exact = Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{exact:f}"


def _light_lx_log_le(raw: bytes) -> str:
    # NAS UL20xx calcLightLx()/formatLightLx(): uint16 LE, 0xFFFF = "unavailable", else the low
    # 15 bits v give 10^(v/4000)/1000 lx, printed with 3 - trunc(clamp(log10(lx), 0, 3)) decimals
    # (4 significant digits up to 1000 lx). pow and log10 are libm's, as in JavaScript engines.
    value = int.from_bytes(raw, "little")
    if value == 0xFFFF:
        return "unavailable"
    lux = math.pow(10, (value & 0x7FFF) / 4000.0) / 1000.0
    magnitude = min(max(math.log10(lux), 0.0), 3.0)
    return js_to_fixed(lux, 3 - math.trunc(magnitude))


@dataclass(frozen=True, slots=True)
class Format:
    """A named transform of a fixed number of raw bytes into a string.

    ``size`` 0 means the profile gives the byte count with ``size:`` (a dotted version of 2 or 4 bytes).
    """

    size: int
    apply: Callable[[bytes], str]


FORMATS: Final[Mapping[str, Format]] = {
    "version_nibbles": Format(1, _version_nibbles),
    "version_hex_bytes": Format(2, _version_hex_bytes),
    "version_hex_major_hi_nibble": Format(2, _version_hex_major_hi_nibble),
    "version_bytes": Format(2, _version_bytes),
    "version_major_hi_nibble": Format(2, _version_major_hi_nibble),
    "version_decimal_dotted": Format(0, _version_decimal_dotted),
    "version_v_decimal_dotted": Format(0, _version_v_decimal_dotted),
    "int16_be_tenths_fixed2": Format(2, _int16_be_tenths_fixed2),
    "unix_time_le_iso8601": Format(4, _unix_time_le_iso8601),
    "uint32_le_hex_upper": Format(4, _uint32_le_hex_upper),
    "uint16_le_hex": Format(2, _uint16_le_hex),
    "light_lx_log_le": Format(2, _light_lx_log_le),
}


# ---------------------------------------------------------------------- expansions


def bit_flags(mask: int, count: int) -> list[int]:
    """Bit ``idx`` of ``mask`` for idx 0..count-1, as 0/1 (Milesight VS121 ``(region >> idx) & 1``).

    JavaScript's ``>>`` shifts by ``idx mod 32`` (ECMA-262 §13.9.2 ShiftExpression), so a count
    above 32 repeats the low bits, exactly as the vendor decoder prints them.
    """
    return [(mask >> (idx % 32)) & 1 for idx in range(count)]


EXPANSIONS: Final[Mapping[str, Callable[[int, int], list[int]]]] = {
    "bit_flags": bit_flags,
}
"""Named transforms of one integer into ``count`` numbered outputs (``region_{n}``, n = 1..count)."""


# ------------------------------------------------------------------------- fields

INT_CODES: Final[Mapping[str, str]] = {
    "uint8": "B",
    "int8": "b",
    "uint16": "H",
    "int16": "h",
    "uint32": "I",
    "int32": "i",
}
# Integers struct has no code for, read with int.from_bytes: type -> size in bytes.
_WIDE_INTS: Final[Mapping[str, int]] = {"uint24": 3}
INTEGER_TYPES: Final[tuple[str, ...]] = (*INT_CODES, *_WIDE_INTS)
_FLOAT_CODES: Final[Mapping[str, str]] = {"float16": "e", "float32": "f"}
_SIZED_TYPES: Final = ("hex", "bytes", "constant", "bcd")
FIELD_TYPES: Final[tuple[str, ...]] = (*INTEGER_TYPES, *_FLOAT_CODES, "bool", *_SIZED_TYPES)


def js_round(value: float) -> int:
    """JavaScript ``Math.round``: the nearest integer, ties toward +infinity (ECMA-262 §21.3.2.28).

    Not ``floor(x + 0.5)``, which is wrong for 0.49999999999999994; ``x - floor(x)`` is exact.
    """
    low = math.floor(value)
    return low + 1 if value - low >= 0.5 else low


def _round_op(value: Any, digits: Any) -> Any:
    # {round: N} is the vendors' Math.round(x * 10^N) / 10^N, step for step (N = 0: Math.round(x)).
    factor = 10**digits
    return js_round(value * factor) / factor


OPS: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "sub": lambda x, n: x - n,
    "add": lambda x, n: x + n,
    "mul": lambda x, n: x * n,
    "div": lambda x, n: x / n,
    "round": _round_op,
}
ENDIANS: Final[Mapping[str, str]] = {"le": "<", "be": ">"}
MAX_FIELD_BYTES: Final = 64

_MEANING_KEYS: Final = ("quantity", "unit", "sdm", "description")
_FIELD_KEYS: Final = (
    "type",
    "endian",
    "scale",
    "offset",
    "enum",
    "enum_default",
    "size",
    "format",
    "value",
    "at",
    "bits",
    "hidden",
    "ops",
    "expand",
    "count",
    "sentinels",
    "flags",
    "case",
    "length",
    *_MEANING_KEYS,
)
SPAN_REST: Final = "rest"
"""``size: rest``: a ``hex`` field that runs to the end of its record."""
_HEX_CASES: Final = ("lower", "upper")
_NAME_TEMPLATE_RE: Final = re.compile(r"^(?:[A-Za-z0-9_]|\{[a-z_][a-z0-9_]*\})+$")
_PLACEHOLDER_RE: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Output:
    """What one output key means: the quantity, its unit and an optional FIWARE attribute.

    ``sdm`` names a FIWARE Smart Data Model attribute (``Device.batteryLevel``);
    converting our unit into the model's (percent → 0..1) is the mapper's job,
    driven by ``unit``.
    """

    name: str
    quantity: str
    unit: str | None = None
    sdm: str | None = None
    description: str = ""
    fields: tuple[Output, ...] = ()
    """The outputs inside a nested value (``type: object``, ``list`` or ``tlv``); empty otherwise."""


@dataclass(frozen=True, slots=True)
class CompiledField:
    """A field ready to decode: its output, its byte size and its reader."""

    output: Output
    size: int
    read: Reader
    at: int | None = None
    hidden: bool = False
    placeholders: tuple[str, ...] = ()
    """Hidden values the output name refers to (``L{freq}{time}``); empty for a plain name."""
    expand: Callable[[int, int], list[int]] | None = None
    """With ``expand``: the value becomes outputs ``name`` with ``{n}`` = 1..count (``EXPANSIONS``)."""
    count_from: str | None = None
    """With ``expand``: the earlier field of the same record that holds the count."""
    span: str | None = None
    """A ``hex`` field of variable size: ``SPAN_REST`` or the earlier field holding its byte count.
    Then ``size`` is 0 and ``read_span`` reads it; only a sequence (``nested.py``) can."""
    read_span: SpanReader | None = None


def compile_field(
    spec: Spec, *, default_endian: str | None, extra_keys: tuple[str, ...] = ()
) -> CompiledField:
    """Validate one field description and build its reader.

    ``extra_keys`` are keys of the enclosing layout allowed in the same mapping
    (a channel with a single inline field carries ``channel_id`` and ``channel_type``).
    """
    hidden = spec.has("hidden") and spec["hidden"].as_bool()
    required = ("name", "type") if hidden else ("name", "type", "quantity")
    spec.mapping(required=required, optional=(*_FIELD_KEYS, *extra_keys))
    if hidden:
        name = spec["name"].as_str(pattern=re.compile(r"[a-z_][a-z0-9_]*"), hint="lowercase, digits and _")
    else:
        name = spec["name"].as_str(
            pattern=_NAME_TEMPLATE_RE, hint="letters, digits and _, or {hidden_field} placeholders"
        )
        if name[0].isdigit():
            raise spec["name"].fail(f"{name!r} is not valid: must not start with a digit")
    placeholders = tuple(_PLACEHOLDER_RE.findall(name))
    expand, count_from = _compile_expand(spec, name)
    if expand is not None:
        placeholders = tuple(p for p in placeholders if p != "n")
    ftype = spec["type"].as_choice(FIELD_TYPES)
    if expand is not None and ftype not in INTEGER_TYPES:
        raise spec["expand"].fail(f"needs an integer type, not {ftype}")
    for key in ("case", "length"):
        if spec.has(key) and ftype != "hex":
            raise spec[key].fail(f"only allowed with type hex, not {ftype}")
    span: str | None = None
    read_span: SpanReader | None = None
    if ftype == "hex":
        size, read, span, read_span = _compile_hex(spec)
        numeric = False
    elif ftype in INTEGER_TYPES or ftype in _FLOAT_CODES or ftype == "bool":
        size, read, numeric = _compile_int(spec, ftype, default_endian)
    else:
        for key in ("endian", "scale", "offset", "enum", "enum_default", "bits", "ops"):
            if spec.has(key):
                raise spec[key].fail(f"not allowed with type {ftype}")
        size, read = _compile_sized(spec, ftype)
        numeric = ftype == "bcd"
    if not spec.has("format") and ftype == "bytes":
        raise spec.fail("type bytes needs a 'format'")
    at_spec = spec.get("at")
    at = at_spec.as_int(0, MAX_FIELD_BYTES * 4) if at_spec is not None else None
    if hidden:
        output = Output(name=name, quantity="hidden")
    else:
        output = _compile_output(spec, name, numeric=numeric)
    return CompiledField(
        output=output,
        size=size,
        read=read,
        at=at,
        hidden=hidden,
        placeholders=placeholders,
        expand=expand,
        count_from=count_from,
        span=span,
        read_span=read_span,
    )


def _compile_expand(spec: Spec, name: str) -> tuple[Callable[[int, int], list[int]] | None, str | None]:
    """``expand: bit_flags`` + ``count: <earlier field>``: one integer → outputs ``name`` for n = 1..count."""
    expand_spec = spec.get("expand")
    count_spec = spec.get("count")
    if expand_spec is None:
        if count_spec is not None:
            raise count_spec.fail("only allowed together with 'expand'")
        return None, None
    expand = EXPANSIONS[expand_spec.as_choice(EXPANSIONS)]
    if count_spec is None:
        raise spec.fail(
            "'expand' needs 'count': the name of an earlier field of the record holding the count"
        )
    count_from = count_spec.as_str(pattern=re.compile(r"[a-z_][a-z0-9_]*"), hint="a field name")
    if "{n}" not in name:
        raise spec["name"].fail(
            f"{name!r} needs a {{n}} placeholder for the expanded index (e.g. region_{{n}})"
        )
    for key in ("scale", "offset", "enum", "ops", "sentinels", "flags"):
        if spec.has(key):
            raise spec[key].fail("not allowed together with 'expand'")
    return expand, count_from


def _compile_bits(spec: Spec, raw: Reader, bits: int, default: tuple[int, int] | None) -> tuple[Reader, int]:
    """Apply ``bits: [lsb, width]``; returns the reader and the field's width in bits."""
    bits_spec = spec.get("bits")
    if bits_spec is None:
        if default is None:
            return raw, bits
        lsb, width = default
    else:
        pair = list(bits_spec.items())
        if len(pair) != 2:
            raise bits_spec.fail("must be [lsb, width], e.g. [2, 2] for bits 2..3")
        lsb = pair[0].as_int(0, bits - 1)
        width = pair[1].as_int(1, bits - lsb)
    mask = (1 << width) - 1

    def read_bits(buf: bytes, pos: int) -> Any:
        return (raw(buf, pos) >> lsb) & mask

    return read_bits, width


def js_number(value: Any) -> Any:
    # JavaScript has one number type: an integral result prints as 4232, not 4232.0.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def compile_transform(spec: Spec) -> Callable[[Any], Any]:
    """The ``ops`` list of ``spec`` as one function (identity without ``ops``); never eval."""
    ops_spec = spec.get("ops")
    if ops_spec is None:
        return js_number
    steps: list[tuple[Callable[[Any, Any], Any], int | float]] = []
    for item in ops_spec.items():
        if not isinstance(item.value, dict) or len(item.value) != 1:
            raise item.fail(f"must be one of {{{' | '.join(OPS)}: number}}")
        (op,) = item.value
        Spec(op, file=item.file, path=item.path).as_choice(OPS)
        number = item[op].as_int(0, 9) if op == "round" else item[op].as_number()
        if op == "div" and number == 0:
            raise item[op].fail("must not be 0")
        steps.append((OPS[op], number))
    if not steps:
        raise ops_spec.fail("must list at least one operation")
    frozen = tuple(steps)

    def transform(value: Any) -> Any:
        for apply, number in frozen:
            value = apply(value, number)
        return js_number(value)

    return transform


def _compile_ops(spec: Spec, raw: Reader) -> Reader:
    transform = compile_transform(spec)

    def read_ops(buf: bytes, pos: int) -> Any:
        return transform(raw(buf, pos))

    return read_ops


def _compile_int(spec: Spec, ftype: str, default_endian: str | None) -> tuple[int, Reader, bool]:
    """Integers, floats and booleans: a fixed-size number read with ``struct``."""
    for key in ("size", "format", "value"):
        if spec.has(key):
            raise spec[key].fail(f"not allowed with type {ftype}")
    is_float = ftype in _FLOAT_CODES
    if is_float or ftype == "bool":
        for key in ("enum", "enum_default", *(("bits",) if is_float else ())):
            if spec.has(key):
                raise spec[key].fail(f"not allowed with type {ftype}")
    if is_float:
        for key in ("sentinels", "flags"):
            if spec.has(key):
                raise spec[key].fail(f"not allowed with type {ftype}")
    if ftype == "bool":
        for key in ("scale", "offset", "ops", "endian", "flags"):
            if spec.has(key):
                raise spec[key].fail("not allowed with type bool")
        read_bit, _width = _compile_bits(spec, lambda buf, pos: buf[pos], 8, (0, 1))

        def read_bool(buf: bytes, pos: int) -> Any:
            return read_bit(buf, pos) != 0

        # A bool's own bit has two values only: its sentinels match the whole byte
        # (NAS UL20xx daliStatus(): a status byte 0xFF means "no answer", every flag false).
        return 1, _compile_sentinels(spec, lambda buf, pos: buf[pos], read_bool, 0, 0xFF), False
    code = _FLOAT_CODES[ftype] if is_float else INT_CODES.get(ftype, "")
    size = _WIDE_INTS[ftype] if ftype in _WIDE_INTS else struct.calcsize(code)
    endian_spec = spec.get("endian")
    endian = endian_spec.as_choice(ENDIANS) if endian_spec is not None else default_endian
    if size > 1 and endian is None:
        raise spec.fail(f"type {ftype} needs 'endian: le' or 'endian: be' (here or in the decoder)")

    raw: Reader
    if ftype in _WIDE_INTS:
        byteorder: Literal["little", "big"] = "little" if endian == "le" else "big"

        def raw(buf: bytes, pos: int) -> Any:
            return int.from_bytes(buf[pos : pos + size], byteorder)
    elif size == 1 and code == "B":
        # Indexing bytes is the fastest uint8 read; no struct call needed.
        def raw(buf: bytes, pos: int) -> Any:
            return buf[pos]
    else:
        unpack = struct.Struct(ENDIANS[endian or "le"] + code).unpack_from

        def raw(buf: bytes, pos: int) -> Any:
            return unpack(buf, pos)[0]

    signed = code.islower() and not is_float
    bits = 8 * size
    if not is_float:
        raw, width = _compile_bits(spec, raw, bits, None)
        if width != bits:
            signed = False  # a bit field is unsigned
            bits = width
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    if is_float:
        read, numeric = _compile_value(spec, raw, low, high)
        return size, read, numeric
    if spec.has("flags"):
        for key in ("scale", "offset", "enum", "enum_default", "ops", "sentinels"):
            if spec.has(key):
                raise spec[key].fail("not allowed together with 'flags'")
        return size, _compile_flags(spec, raw, bits), False
    read, numeric = _compile_value(spec, raw, low, high)
    return size, _compile_sentinels(spec, raw, read, low, high), numeric


def _compile_value(spec: Spec, raw: Reader, low: int, high: int) -> tuple[Reader, bool]:
    """``ops``, ``enum`` or ``scale``/``offset`` on a number read by ``raw``; (reader, numeric)."""
    if spec.has("ops"):
        for key in ("scale", "offset", "enum"):
            if spec.has(key):
                raise spec[key].fail("not allowed together with 'ops'")
        return _compile_ops(spec, raw), True
    if spec.has("enum"):
        for key in ("scale", "offset"):
            if spec.has(key):
                raise spec[key].fail("not allowed together with 'enum'")
        return _compile_enum(spec, raw, low, high), False
    if spec.has("enum_default"):
        raise spec["enum_default"].fail("only allowed together with 'enum'")
    if spec.has("scale") or spec.has("offset"):
        return _compile_linear(spec, raw), True
    return raw, True


def _compile_sentinels(spec: Spec, raw: Reader, read: Reader, low: int, high: int) -> Reader:
    """``sentinels: {0xff: resume}``: these raw values print as given, every other one as ``read`` says.

    Vendors reserve a value for "no reading" or a command word (NAS UL20xx dimming level 0xFF =
    "resume", Milesight 0xFFFF = no sensor); unlike ``enum``, the other values stay numbers.
    """
    sentinels_spec = spec.get("sentinels")
    if sentinels_spec is None:
        return read
    if not isinstance(sentinels_spec.value, dict) or not sentinels_spec.value:
        raise sentinels_spec.fail("must be a non-empty mapping of integer → value")
    table: dict[int, Any] = {}
    for key, value in sentinels_spec.value.items():
        entry = Spec(value, file=spec.file, path=f"{sentinels_spec.path}.{key}")
        Spec(key, file=spec.file, path=entry.path).as_int(low, high)
        if value is not None and not isinstance(value, str | int | float | bool):
            raise entry.fail(f"must be a string, a number, true/false or null, got {_kind(value)}")
        table[key] = value
    frozen = dict(table)

    def read_sentinel(buf: bytes, pos: int) -> Any:
        value = raw(buf, pos)
        if value in frozen:
            return frozen[value]
        return read(buf, pos)

    return read_sentinel


def _compile_flags(spec: Spec, raw: Reader, bits: int) -> Reader:
    """``flags: {0: reset_0, 1: watchdog_reset}``: the names of the set bits, lowest bit first.

    NAS UL20xx resetReasonParse() and the days of a profile list the set bits this way.
    """
    flags_spec = spec["flags"]
    if not isinstance(flags_spec.value, dict) or not flags_spec.value:
        raise flags_spec.fail("must be a non-empty mapping of bit number → name")
    names: dict[int, str] = {}
    for key, label in flags_spec.value.items():
        entry = Spec(label, file=spec.file, path=f"{flags_spec.path}.{key}")
        Spec(key, file=spec.file, path=entry.path).as_int(0, bits - 1)
        names[key] = entry.as_str()
    ordered = tuple(sorted(names.items()))

    def read_flags(buf: bytes, pos: int) -> Any:
        value = raw(buf, pos)
        return [name for bit, name in ordered if (value >> bit) & 1]

    return read_flags


def _compile_enum(spec: Spec, raw: Reader, low: int, high: int) -> Reader:
    enum_spec = spec["enum"]
    if not isinstance(enum_spec.value, dict) or not enum_spec.value:
        raise enum_spec.fail("must be a non-empty mapping of integer → string")
    table: dict[int, str] = {}
    for key, label in enum_spec.value.items():
        entry = Spec(label, file=spec.file, path=f"{enum_spec.path}.{key}")
        Spec(key, file=spec.file, path=entry.path).as_int(low, high)
        table[key] = entry.as_str()
        if not table[key]:
            raise entry.fail("must not be empty")
    default_spec = spec.get("enum_default")
    # The vendor decoders print "unknown" for a value outside the map (Milesight getValue()).
    default = default_spec.as_str() if default_spec is not None else "unknown"
    lookup = table.get

    def read(buf: bytes, pos: int) -> Any:
        return lookup(raw(buf, pos), default)

    return read


def _decimals(number: int | float) -> int:
    exponent = Decimal(repr(number)).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _compile_linear(spec: Spec, raw: Reader) -> Reader:
    scale_spec = spec.get("scale")
    offset_spec = spec.get("offset")
    scale = scale_spec.as_number() if scale_spec is not None else 1
    offset = offset_spec.as_number() if offset_spec is not None else 0
    if scale == 0:
        raise spec["scale"].fail("must not be 0")
    if isinstance(scale, int) and isinstance(offset, int):

        def read_int(buf: bytes, pos: int) -> Any:
            return raw(buf, pos) * scale + offset

        return read_int
    # Round to the decimals written in the profile so 3 * 0.1 gives 0.3, the same double the
    # vendor's `value / 10` gives, and not 0.30000000000000004.
    digits = max(_decimals(scale), _decimals(offset))

    def read_float(buf: bytes, pos: int) -> Any:
        return round(raw(buf, pos) * scale + offset, digits)

    return read_float


def _compile_hex(spec: Spec) -> tuple[int, Reader, str | None, SpanReader | None]:
    """``hex``: ``size`` bytes, or a span (``size: rest``, ``length: <field>``); ``case`` of the digits."""
    for key in ("endian", "scale", "offset", "enum", "enum_default", "bits", "ops", "format", "value"):
        if spec.has(key):
            raise spec[key].fail("not allowed with type hex")
    case_spec = spec.get("case")
    upper = case_spec is not None and case_spec.as_choice(_HEX_CASES) == "upper"
    size_spec, length_spec = spec.get("size"), spec.get("length")

    def read_span(buf: bytes, pos: int, count: int) -> Any:
        text = buf[pos : pos + count].hex()
        return text.upper() if upper else text

    if size_spec is not None and length_spec is not None:
        raise spec.fail("give either 'size' or 'length', not both")
    if length_spec is not None:
        # Checked against the record's earlier fields by nested.py, which knows them.
        name = length_spec.as_str(
            pattern=re.compile(r"[a-z_][a-z0-9_]*"), hint="the name of an earlier field"
        )
        return 0, _no_fixed_read, name, read_span
    if size_spec is None:
        raise spec.fail(f"type hex needs a 'size' in bytes, 'size: {SPAN_REST}' or 'length: <earlier field>'")
    if size_spec.value == SPAN_REST:
        return 0, _no_fixed_read, SPAN_REST, read_span
    if isinstance(size_spec.value, str):
        raise size_spec.fail(f"must be a number of bytes or {SPAN_REST!r} (to the end of the record)")
    size = size_spec.as_int(1, MAX_FIELD_BYTES)

    def read_hex(buf: bytes, pos: int) -> Any:
        return read_span(buf, pos, size)

    return size, read_hex, None, None


def _no_fixed_read(buf: bytes, pos: int) -> Any:
    raise AssertionError("a hex span is read by read_span")  # pragma: no cover - nested.py never calls it


def _compile_sized(spec: Spec, ftype: str) -> tuple[int, Reader]:
    fmt: Format | None = None
    if spec.has("format"):
        if ftype != "bytes":
            raise spec["format"].fail(f"not allowed with type {ftype} (use type: bytes)")
        fmt = FORMATS[spec["format"].as_choice(FORMATS)]
    size_spec = spec.get("size")
    if size_spec is not None:
        # A constant may read nothing: a vendor's fixed word such as Dragino's Node_type "LDDS75".
        size = size_spec.as_int(0 if ftype == "constant" else 1, MAX_FIELD_BYTES)
        if fmt is not None and fmt.size and size != fmt.size:
            raise size_spec.fail(f"format {spec['format'].value} reads {fmt.size} bytes, not {size}")
    elif fmt is not None and fmt.size:
        size = fmt.size
    else:
        raise spec.fail(f"type {ftype} needs a 'size' in bytes")
    if spec.has("value") and ftype != "constant":
        raise spec["value"].fail(f"not allowed with type {ftype}")

    if ftype == "bcd":

        def read_bcd(buf: bytes, pos: int) -> Any:
            # Each nibble is a decimal digit; int() of the hex text is the decimal number.
            text = buf[pos : pos + size].hex()
            if not text.isdigit():
                raise DecodeError(f"BCD field holds a non-decimal nibble: {text}", reason="bad_bcd")
            return int(text)

        return size, read_bcd
    if ftype == "constant":
        value_spec = spec["value"]
        value = value_spec.value
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise value_spec.fail(f"must be a string or a number, got {_kind(value)}")

        def read_constant(buf: bytes, pos: int) -> Any:
            return value

        return size, read_constant
    assert fmt is not None
    apply = fmt.apply

    def read_format(buf: bytes, pos: int) -> Any:
        return apply(bytes(buf[pos : pos + size]))

    return size, read_format


def _compile_output(spec: Spec, name: str, *, numeric: bool) -> Output:
    quantity = spec["quantity"].as_str()
    unit_spec = spec.get("unit")
    unit = unit_spec.as_str() if unit_spec is not None else None
    if numeric and unit is None:
        raise spec.fail("a numeric field needs a 'unit' (UCUM symbol; '1' for a plain count)")
    sdm_spec = spec.get("sdm")
    description_spec = spec.get("description")
    return Output(
        name=name,
        quantity=quantity,
        unit=unit,
        sdm=sdm_spec.as_str() if sdm_spec is not None else None,
        description=description_spec.as_str() if description_spec is not None else "",
    )
