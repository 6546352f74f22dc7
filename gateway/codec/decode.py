"""Uplink payload layouts ("families") compiled from a profile's ``decoder`` section.

Owns the ``Decoded`` result and the payload layouts a profile may choose with
``decoder.family``:

* ``channel_tlv`` — the Milesight-style stream of ``channel_id (1 B), channel_type (1 B),
  data (N B)`` records where the pair of header bytes selects a group of fields: of a fixed
  size, or read by ``nested.py``'s cursor and ending where it ends (a type byte inside);
* ``sensor_flags`` — the Decentlab v2 frame: protocol version (1 B), device id (uint16 BE),
  sensor flags (uint16 BE, bit i = sensor group i present), then each present group's
  big-endian uint16 words, each value computed from one word by named ``ops``;
* ``fixed`` — fields at fixed byte offsets (Dragino-style), optionally followed by a
  repeated block filling the rest of the payload; a field list with objects, lists,
  tlv blocks or ``if``/``optional`` fields is read by ``nested.py``'s cursor instead.

Each family compiles its
section once into a ``CompiledDecoder`` whose ``decode(payload)`` only runs
prebuilt closures and ``struct.Struct`` readers from ``fields.py``.

It does not own field types (``fields.py``), profile identity, LoRaWAN facts or
examples (``profile.py``), nor fPort dispatch (``Profile.decode``). It is pure:
bytes in, ``Decoded`` out, ``DecodeError`` on a payload that cannot match.

Error policy, shared by every family:

* a field that runs past the end of the payload raises ``DecodeError`` with
  reason ``truncated`` (nothing of the payload is trusted then);
* a channel the profile does not know stops decoding with a *warning*: the TLV
  stream carries no length, so what follows cannot be framed, but what was decoded
  before it is kept. The vendor decoders stop silently at the same point
  (Milesight-IoT/SensorDecoders em310-udl-decoder.js, ``else { break; }``).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.codec.fields import CompiledField, Output, Spec, compile_field, compile_transform
from gateway.codec.nested import Region, Sequence, compile_sequence, needs_sequence
from gateway.errors import DecodeError

logger = logging.getLogger(__name__)


class Decoded:
    """The decoded object of one payload and the warnings raised while decoding it.

    ``data`` uses the vendor decoder's output keys so platforms built on the vendor
    codec keep working; ``warnings`` are one-line human-readable notes (an unknown
    channel) that do not invalidate ``data``.

    A plain slots class, not a frozen dataclass: one is built per payload, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost about 260 ns against
    about 100 ns here, a quarter of a small TLV decode (bench/bench_codec.py). ``data`` is a
    dict that derived values fill in place, so freezing the holder protected nothing.
    """

    __slots__ = ("data", "warnings")

    def __init__(self, data: dict[str, Any], warnings: tuple[str, ...]) -> None:
        self.data = data
        self.warnings = warnings

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decoded):
            return NotImplemented
        return self.data == other.data and self.warnings == other.warnings

    __hash__ = None  # type: ignore[assignment]  # holds a dict, like the dataclass it replaces

    def __repr__(self) -> str:
        return f"Decoded(data={self.data!r}, warnings={self.warnings!r})"


@dataclass(frozen=True, slots=True)
class CompiledDecoder:
    """A profile's uplink layout, compiled: the decode function and what its outputs mean."""

    family: str
    decode: Callable[[bytes], Decoded]
    outputs: tuple[Output, ...]
    decode_port: Callable[[int, bytes], Decoded] | None = None
    """Set when the layout depends on the fPort (``fixed`` with ``layouts`` selected by ``fport``)."""


# ------------------------------------------------------------------ channel_tlv

_ChannelRun = Callable[[bytes, int, dict[str, Any]], None]
_CHANNEL_KEYS: Final = ("channel_id", "channel_type")


def _channel_run(fields: list[CompiledField], specs: list[Spec] | None = None) -> tuple[int, _ChannelRun]:
    """One closure that writes a record's fields into the output dict; returns (size, run).

    A field's offset is its ``at`` or the end of the field before it. Hidden fields
    only feed ``{placeholders}`` of later names in the same record.
    """
    steps: list[tuple[str, int, Callable[[bytes, int], Any], bool, bool]] = []
    expansions: dict[int, tuple[Callable[[int, int], list[int]], str, str, str]] = {}
    offset = 0
    size = 0
    hidden_names: set[str] = set()
    earlier: set[str] = set()
    for index, compiled in enumerate(fields):
        at = compiled.at if compiled.at is not None else offset
        offset = at + compiled.size
        size = max(size, offset)
        where = specs[index] if specs is not None else None
        for placeholder in compiled.placeholders:
            if placeholder not in hidden_names:
                message = f"placeholder {{{placeholder}}} needs a hidden field of that name before it"
                if where is not None:
                    raise where.fail(message)
                raise ValueError(message)
        if compiled.expand is not None:
            assert compiled.count_from is not None  # compile_field sets both
            if compiled.count_from not in earlier:
                message = f"count {compiled.count_from!r} must name an earlier field of this record"
                if where is not None:
                    raise where.fail(message)
                raise ValueError(message)
            prefix, _, suffix = compiled.output.name.partition("{n}")
            expansions[index] = (compiled.expand, compiled.count_from, prefix, suffix)
        if compiled.hidden:
            hidden_names.add(compiled.output.name)
        earlier.add(compiled.output.name)
        steps.append((compiled.output.name, at, compiled.read, compiled.hidden, bool(compiled.placeholders)))
    frozen_steps = tuple(steps)

    if not hidden_names and not expansions:
        if len(frozen_steps) == 1 and frozen_steps[0][1] == 0:
            name, _at, read, _hidden, _templated = frozen_steps[0]

            def run_one(buf: bytes, pos: int, out: dict[str, Any]) -> None:
                out[name] = read(buf, pos)

            return size, run_one
        plain = tuple((name, at, read) for name, at, read, _h, _t in frozen_steps)

        def run_many(buf: bytes, pos: int, out: dict[str, Any]) -> None:
            for name, field_offset, read in plain:
                out[name] = read(buf, pos + field_offset)

        return size, run_many

    scoped = tuple((*step, expansions.get(index)) for index, step in enumerate(frozen_steps))

    def run_scoped(buf: bytes, pos: int, out: dict[str, Any]) -> None:
        scope: dict[str, Any] = {}
        for name, field_offset, read, hidden, templated, expansion in scoped:
            value = read(buf, pos + field_offset)
            if expansion is not None:
                expand, count_from, prefix, suffix = expansion
                for number, item in enumerate(expand(value, scope[count_from]), start=1):
                    out[f"{prefix}{number}{suffix}"] = item
                continue
            scope[name] = value
            if hidden:
                continue
            if templated:
                out[name.format_map(scope)] = value
            else:
                out[name] = value

    return size, run_scoped


def _channel_ids(spec: Spec) -> list[int]:
    """``channel_id`` is one byte or a list of bytes sharing a layout (Milesight 0xFE and 0xFF)."""
    if isinstance(spec.value, list):
        ids = [item.as_int(0, 0xFF) for item in spec.items()]
        if not ids:
            raise spec.fail("must not be an empty list")
        return ids
    return [spec.as_int(0, 0xFF)]


def compile_channel_tlv(spec: Spec) -> CompiledDecoder:
    """Compile a ``family: channel_tlv`` decoder section."""
    spec.mapping(required=("family", "channels"), optional=("endian", "description", "header"))
    endian_spec = spec.get("endian")
    default_endian = endian_spec.as_choice(("le", "be")) if endian_spec is not None else None
    header_spec = spec.get("header")
    # "id_type": channel_id + channel_type (Milesight); "type": one type byte (Elsys).
    type_only = header_spec is not None and header_spec.as_choice(("id_type", "type")) == "type"
    channel_keys: tuple[str, ...] = ("channel_type",) if type_only else _CHANNEL_KEYS

    table: dict[int, _TlvEntry] = {}
    where: dict[int, str] = {}
    outputs: dict[str, Output] = {}
    channels = list(spec["channels"].items())
    if not channels:
        raise spec["channels"].fail("must list at least one channel")
    for channel in channels:
        if not isinstance(channel.value, dict):
            raise channel.fail(f"must be a mapping with {', '.join(channel_keys)} and a field")
        if type_only and channel.has("channel_id"):
            raise channel["channel_id"].fail("not allowed with 'header: type' (one type byte per record)")
        channel_ids = [0] if type_only else _channel_ids(channel["channel_id"])
        channel_type = channel["channel_type"].as_int(0, 0xFF)

        fields: list[CompiledField] = []
        if channel.has("fields"):
            channel.mapping(required=(*channel_keys, "fields"))
            field_specs = list(channel["fields"].items())
            if not field_specs:
                raise channel["fields"].fail("must list at least one field")
            if needs_sequence(field_specs):
                # Objects or conditional fields (WS558 delayed-switch answer): the cursor reader.
                nested_entry = _sequence_entry(channel, default_endian, outputs)
                for channel_id in channel_ids:
                    _add_channel(table, where, (channel_id << 8) | channel_type, nested_entry, channel)
                continue
            for field_spec in field_specs:
                fields.append(compile_field(field_spec, default_endian=default_endian))
            names = [compiled.output.name for compiled in fields]
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise field_specs[index]["name"].fail(f"duplicate output {name!r} in this channel")
        else:
            fields.append(compile_field(channel, default_endian=default_endian, extra_keys=channel_keys))

        owners = _field_specs(channel)
        for compiled, owner in zip(fields, owners, strict=True):
            if not compiled.hidden:
                _merge_output(outputs, compiled.output, owner)

        size, run = _channel_run(fields, owners)
        # A channel of one plain field is read inline by the decode loop (no run() call).
        single = len(fields) == 1 and fields[0].at in (None, 0) and not fields[0].hidden
        entry: _TlvEntry = (size, fields[0].output.name if single else None, fields[0].read, run, None)
        for channel_id in channel_ids:
            _add_channel(table, where, (channel_id << 8) | channel_type, entry, channel)

    decode = _tlv_decoder(table, type_only=type_only)
    return CompiledDecoder(family="channel_tlv", decode=decode, outputs=tuple(outputs.values()))


def _add_channel(
    table: dict[int, _TlvEntry], where: dict[int, str], key: int, entry: _TlvEntry, channel: Spec
) -> None:
    if key in table:
        raise channel.fail(f"duplicate channel {key >> 8:02x} {key & 0xFF:02x} (already at {where[key]})")
    table[key] = entry
    where[key] = channel.path


def _sequence_entry(channel: Spec, default_endian: str | None, outputs: dict[str, Output]) -> _TlvEntry:
    """A channel whose fields use ``nested.py`` constructs.

    When no construct lets the payload decide the record's size, the header implies it, as
    for plain records. Otherwise (a tlv, a list, a span, a field with ``if`` and no ``at``)
    the record runs its sequence and ends where the sequence ends (Milesight ``20 ce``
    history: a type byte inside picks the size).
    """
    channel_outputs: dict[str, Output] = {}
    compiled = compile_sequence(channel["fields"], default_endian=default_endian, outputs=channel_outputs)
    for output in channel_outputs.values():
        _merge_output(outputs, output, channel)
    sequence = compiled.sequence
    if compiled.size is None:

        def walk(buf: bytes, pos: int, out: dict[str, Any], warnings: list[str]) -> int:
            return sequence.run(Region(buf, pos, len(buf), warnings), out, {})

        return (0, None, _never_read, _no_run, walk)
    size = compiled.size
    no_warnings: list[str] = []  # a fixed-size record holds no tlv region, so it never warns

    def run(buf: bytes, pos: int, out: dict[str, Any]) -> None:
        sequence.run(Region(buf, pos, pos + size, no_warnings), out, {})

    return (size, None, _never_read, run, None)


def _never_read(buf: bytes, pos: int) -> Any:  # pragma: no cover - entries with a run never read inline
    raise AssertionError("a sequence channel is read by its run()")


def _field_specs(channel: Spec) -> list[Spec]:
    return list(channel["fields"].items()) if channel.has("fields") else [channel]


def _merge_output(outputs: dict[str, Output], output: Output, spec: Spec) -> None:
    # One key may come from several channels (EM400: distance in a report and in an alarm
    # frame); it must mean the same thing everywhere or a consumer cannot map it.
    known = outputs.get(output.name)
    if known is None:
        outputs[output.name] = output
    elif (known.quantity, known.unit, known.sdm) != (output.quantity, output.unit, output.sdm):
        raise spec.fail(
            f"output {output.name!r} is declared earlier with quantity={known.quantity!r}, "
            f"unit={known.unit!r}, sdm={known.sdm!r}; the same key must keep one meaning"
        )


_ChannelWalk = Callable[[bytes, int, dict[str, Any], list[str]], int]
_TlvEntry = tuple[int, str | None, Callable[[bytes, int], Any], _ChannelRun, _ChannelWalk | None]
"""(data size, output name of a single-field channel or None, its reader, the channel's run,
and for a variable-size record the walk that reads it and returns where it ends)."""


def _tlv_decoder(table: Mapping[int, _TlvEntry], *, type_only: bool) -> Callable[[bytes], Decoded]:
    """Records of a header and the data bytes its table entry sizes, up to the end of the payload.

    The header is a channel id and a type byte (Milesight), or with ``type_only`` the type byte
    alone (Elsys; the table is keyed by the type). An unknown header stops the decode with a
    warning and keeps what was read (the vendors' decoders stop there too); a header or data cut
    off is a ``DecodeError`` (``truncated``).
    """
    lookup = dict(table).get
    header_bytes = 1 if type_only else 2
    kind = "type" if type_only else "channel"

    def decode(payload: bytes) -> Decoded:
        data: dict[str, Any] = {}
        end = len(payload)
        pos = 0
        notes: list[str] = []  # warnings of variable-size records (an unknown type inside)
        while pos < end:
            start = pos + header_bytes
            if start > end:
                raise DecodeError(f"channel header cut off at byte {pos}", reason="truncated")
            entry = lookup(payload[pos] if type_only else (payload[pos] << 8) | payload[pos + 1])
            if entry is None:
                header = payload[pos:start].hex(" ")
                warning = f"unknown {kind} {header} at byte {pos}: last {end - pos} bytes not decoded"
                return Decoded(data, (*notes, warning))
            size, name, read, run, walk = entry
            if walk is not None:
                pos = walk(payload, start, data, notes)
                continue
            if start + size > end:
                raise DecodeError(
                    f"{kind} {payload[pos:start].hex(' ')} at byte {pos} needs {size} data bytes, "
                    f"{end - start} left",
                    reason="truncated",
                )
            if name is not None:
                data[name] = read(payload, start)
            else:
                run(payload, start, data)
            pos = start + size
        return Decoded(data, tuple(notes))

    return decode


# ----------------------------------------------------------------- sensor_flags

_U16BE: Final = struct.Struct(">H").unpack_from
_HEADER_BYTES: Final = 5  # version (1), device id (2), flags (2): Decentlab DL-MBX.js decode()
_SensorValue = tuple[str, int, Callable[[Any], Any], str | None, str | None]


def compile_sensor_flags(spec: Spec) -> CompiledDecoder:
    """Compile a ``family: sensor_flags`` (Decentlab protocol v2) decoder section."""
    spec.mapping(required=("family", "protocol_version", "sensors"), optional=("description",))
    version = spec["protocol_version"].as_int(0, 0xFF)
    outputs: dict[str, Output] = {
        "protocol_version": Output("protocol_version", quantity="protocol_version"),
        "device_id": Output("device_id", quantity="device_id"),
    }
    groups: list[tuple[int, tuple[_SensorValue, ...]]] = []
    sensor_specs = list(spec["sensors"].items())
    if not sensor_specs or len(sensor_specs) > 16:
        raise spec["sensors"].fail("must list 1 to 16 sensor groups (one per flag bit)")
    for sensor in sensor_specs:
        sensor.mapping(required=("words", "values"), optional=("description",))
        words = sensor["words"].as_int(1, 32)
        values: list[_SensorValue] = []
        for value_spec in sensor["values"].items():
            value_spec.mapping(
                required=("name", "word", "quantity"),
                optional=("ops", "unit", "sdm", "description", "display_name", "vendor_unit"),
            )
            name = value_spec["name"].as_str(pattern=re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), hint="a key")
            if name in outputs:
                raise value_spec["name"].fail(f"duplicate output {name!r}")
            word = value_spec["word"].as_int(0, words - 1)
            unit_spec = value_spec.get("unit")
            sdm_spec = value_spec.get("sdm")
            description_spec = value_spec.get("description")
            outputs[name] = Output(
                name=name,
                quantity=value_spec["quantity"].as_str(),
                unit=unit_spec.as_str() if unit_spec is not None else None,
                sdm=sdm_spec.as_str() if sdm_spec is not None else None,
                description=description_spec.as_str() if description_spec is not None else "",
            )
            display_spec = value_spec.get("display_name")
            vendor_unit_spec = value_spec.get("vendor_unit")
            if vendor_unit_spec is not None and display_spec is None:
                raise vendor_unit_spec.fail("only allowed together with 'display_name'")
            values.append(
                (
                    name,
                    word,
                    compile_transform(value_spec),
                    display_spec.as_str() if display_spec is not None else None,
                    vendor_unit_spec.as_str() if vendor_unit_spec is not None else None,
                )
            )
        groups.append((words, tuple(values)))
    return CompiledDecoder(
        family="sensor_flags", decode=_flags_decoder(version, tuple(groups)), outputs=tuple(outputs.values())
    )


def _flags_decoder(
    version: int, groups: tuple[tuple[int, tuple[_SensorValue, ...]], ...]
) -> Callable[[bytes], Decoded]:
    unpackers = {words: struct.Struct(f">{words}H").unpack_from for words, _values in groups}
    known_mask = (1 << len(groups)) - 1

    def decode(payload: bytes) -> Decoded:
        end = len(payload)
        if end < _HEADER_BYTES:
            raise DecodeError(f"header needs {_HEADER_BYTES} bytes, got {end}", reason="truncated")
        if payload[0] != version:
            # The vendor decoder answers {error: "protocol version N doesn't match v2"}.
            raise DecodeError(f"protocol version {payload[0]} doesn't match v{version}", reason="bad_version")
        flags = _U16BE(payload, 3)[0]
        data: dict[str, Any] = {"protocol_version": payload[0], "device_id": _U16BE(payload, 1)[0]}
        pos = _HEADER_BYTES
        for index, (words, values) in enumerate(groups):
            if not (flags >> index) & 1:
                continue
            if pos + 2 * words > end:
                raise DecodeError(
                    f"sensor group {index} needs {2 * words} bytes at byte {pos}, {end - pos} left",
                    reason="truncated",
                )
            x = unpackers[words](payload, pos)
            pos += 2 * words
            for name, word, convert, display_name, vendor_unit in values:
                value = convert(x[word])
                if display_name is None:
                    data[name] = value
                elif vendor_unit is None:
                    data[name] = {"displayName": display_name, "value": value}
                else:
                    data[name] = {"displayName": display_name, "value": value, "unit": vendor_unit}
        warnings: list[str] = []
        if flags & ~known_mask:
            warnings.append(f"flags {flags:#06x} announce sensor groups this profile does not know")
        if pos < end and not flags & ~known_mask:
            warnings.append(f"{end - pos} trailing bytes not decoded")
        return Decoded(data, tuple(warnings))

    return decode


# ------------------------------------------------------------------------ fixed

_MAX_REPEAT: Final = 256


def compile_fixed(spec: Spec) -> CompiledDecoder:
    """Compile a ``family: fixed`` decoder section (fields at byte offsets, optional repeat).

    With ``layouts`` instead of ``fields``, each layout has a ``when`` (any of ``fport``,
    ``length``, ``prefix`` hex) and its own ``fields``; the first layout whose every condition
    holds decodes the payload (IMBuildings: a type/variant header of a given length, or a
    header-less frame on a variant's own fPort).
    """
    if isinstance(spec.value, dict) and "layouts" in spec.value:
        return _compile_layouts(spec)
    spec.mapping(required=("family", "fields"), optional=("endian", "lengths", "repeat", "description"))
    endian_spec = spec.get("endian")
    default_endian = endian_spec.as_choice(("le", "be")) if endian_spec is not None else None
    outputs: dict[str, Output] = {}
    sequence = _maybe_sequence(spec["fields"], default_endian, outputs)
    size, run = (
        (0, _no_run) if sequence is not None else _compile_fields(spec["fields"], default_endian, outputs)
    )
    lengths_spec = spec.get("lengths")
    lengths = (
        frozenset(item.as_int(0, 242) for item in lengths_spec.items()) if lengths_spec is not None else None
    )
    if lengths is not None and any(length < size for length in lengths):
        raise lengths_spec.fail(f"the fields need {size} bytes; every length must be at least that")  # type: ignore[union-attr]
    repeat = _compile_repeat(spec.get("repeat"), default_endian, outputs)
    return CompiledDecoder(
        family="fixed",
        decode=_fixed_decoder(size, run, lengths, repeat, sequence),
        outputs=tuple(outputs.values()),
    )


def _maybe_sequence(spec: Spec, default_endian: str | None, outputs: dict[str, Output]) -> Sequence | None:
    """The cursor reader of ``nested.py`` when the fields need it (objects, lists, ``if``), else None."""
    if not needs_sequence(list(spec.items())):
        return None
    return compile_sequence(spec, default_endian=default_endian, outputs=outputs).sequence


def _no_run(buf: bytes, pos: int, out: dict[str, Any]) -> None:
    """The flat reader of a layout that uses a sequence instead (it reads nothing itself)."""


def _run_sequence(
    sequence: Sequence, payload: bytes, data: dict[str, Any], repeat: _Repeat | None, check_tail: bool
) -> Decoded:
    """Decode with a sequence; then the ``repeat`` blocks or a warning for trailing bytes."""
    warnings: list[str] = []
    end = len(payload)
    pos = sequence.run(Region(payload, 0, end, warnings), data, {})
    if repeat is not None:
        warnings.extend(_read_blocks(payload, pos, repeat, data))
    elif check_tail and pos < end:
        warnings.append(f"{end - pos} trailing bytes not decoded")
    return Decoded(data, tuple(warnings))


_Repeat = tuple[str, int, _ChannelRun]
"""(output key, block size in bytes, run that reads one block)."""


def _compile_repeat(
    repeat_spec: Spec | None, default_endian: str | None, outputs: dict[str, Output]
) -> _Repeat | None:
    if repeat_spec is None:
        return None
    repeat_spec.mapping(required=("name", "quantity", "fields"), optional=("description",))
    repeat_name = repeat_spec["name"].as_str(pattern=re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), hint="a key")
    if repeat_name in outputs:
        raise repeat_spec["name"].fail(f"duplicate output {repeat_name!r}")
    block_outputs: dict[str, Output] = {}
    block_size, block_run = _compile_fields(repeat_spec["fields"], default_endian, block_outputs)
    if block_size == 0:
        raise repeat_spec["fields"].fail("a repeated block must read at least one byte")
    outputs[repeat_name] = Output(repeat_name, quantity=repeat_spec["quantity"].as_str())
    return (repeat_name, block_size, block_run)


def _read_blocks(payload: bytes, pos: int, repeat: _Repeat, data: dict[str, Any]) -> tuple[str, ...]:
    """Read blocks from ``pos`` to the end into ``data[name]``; a short tail is a warning."""
    name, block_size, block_run = repeat
    end = len(payload)
    blocks: list[dict[str, Any]] = []
    while pos + block_size <= end and len(blocks) < _MAX_REPEAT:
        block: dict[str, Any] = {}
        block_run(payload, pos, block)
        blocks.append(block)
        pos += block_size
    data[name] = blocks
    if pos < end:
        return (f"{end - pos} trailing bytes do not fill a {block_size}-byte block",)
    return ()


def _compile_fields(
    spec: Spec, default_endian: str | None, outputs: dict[str, Output]
) -> tuple[int, _ChannelRun]:
    field_specs = list(spec.items())
    if not field_specs:
        raise spec.fail("must list at least one field")
    fields = [compile_field(item, default_endian=default_endian) for item in field_specs]
    for compiled, owner in zip(fields, field_specs, strict=True):
        if compiled.span is not None:
            # Reached by a `repeat` block, whose blocks have one size: a span belongs in `fields`.
            raise owner.fail("a hex field of variable size ('size: rest', 'length') is not allowed here")
        if compiled.hidden:
            continue
        if compiled.output.name in outputs:
            raise owner["name"].fail(f"duplicate output {compiled.output.name!r}")
        outputs[compiled.output.name] = compiled.output
    return _channel_run(fields, field_specs)


def _fixed_decoder(
    size: int,
    run: _ChannelRun,
    lengths: frozenset[int] | None,
    repeat: _Repeat | None,
    sequence: Sequence | None = None,
) -> Callable[[bytes], Decoded]:
    def decode(payload: bytes) -> Decoded:
        end = len(payload)
        if lengths is not None and end not in lengths:
            raise DecodeError(
                f"payload is {end} bytes; this model sends {'/'.join(map(str, sorted(lengths)))}",
                reason="bad_length",
            )
        if sequence is not None:
            return _run_sequence(sequence, payload, {}, repeat, lengths is None)
        if end < size:
            raise DecodeError(f"payload is {end} bytes, the layout needs {size}", reason="truncated")
        data: dict[str, Any] = {}
        run(payload, 0, data)
        warnings: tuple[str, ...] = ()
        if repeat is not None:
            warnings = _read_blocks(payload, size, repeat, data)
        elif lengths is None and end > size:
            warnings = (f"{end - size} trailing bytes not decoded",)
        return Decoded(data, warnings)

    return decode


_Layout = tuple[int | None, int | None, bytes, int, _ChannelRun, _Repeat | None, Sequence | None]
"""(fport or None, length or None, prefix, size the fields need, run, repeat after the fields,
the cursor reader that replaces size and run when the fields are nested or conditional)."""


def _compile_layouts(spec: Spec) -> CompiledDecoder:
    spec.mapping(required=("family", "layouts"), optional=("endian", "description"))
    endian_spec = spec.get("endian")
    default_endian = endian_spec.as_choice(("le", "be")) if endian_spec is not None else None
    outputs: dict[str, Output] = {}
    layouts: list[_Layout] = []
    items = list(spec["layouts"].items())
    if not items:
        raise spec["layouts"].fail("must list at least one layout")
    for item in items:
        item.mapping(required=("when", "fields"), optional=("description", "repeat"))
        when = item["when"].mapping(optional=("fport", "length", "prefix"))
        if not when.value:
            raise when.fail("needs at least one of fport, length, prefix")
        fport_spec = when.get("fport")
        length_spec = when.get("length")
        prefix_spec = when.get("prefix")
        fport = fport_spec.as_int(1, 223) if fport_spec is not None else None
        length = length_spec.as_int(0, 242) if length_spec is not None else None
        prefix = b""
        if prefix_spec is not None:
            try:
                prefix = bytes.fromhex(prefix_spec.as_str())
            except ValueError as exc:
                raise prefix_spec.fail("is not hex") from exc
        layout_outputs: dict[str, Output] = {}
        sequence = _maybe_sequence(item["fields"], default_endian, layout_outputs)
        size, run = (
            (0, _no_run)
            if sequence is not None
            else _compile_fields(item["fields"], default_endian, layout_outputs)
        )
        if length is not None and length < size:
            raise length_spec.fail(f"the fields need {size} bytes")  # type: ignore[union-attr]
        repeat = _compile_repeat(item.get("repeat"), default_endian, layout_outputs)
        for output in layout_outputs.values():
            _merge_output(outputs, output, item)
        layouts.append((fport, length, prefix, size, run, repeat, sequence))
    frozen = tuple(layouts)

    def decode_port(fport: int, payload: bytes) -> Decoded:
        end = len(payload)
        for want_port, want_length, prefix, size, run, repeat, sequence in frozen:
            if want_port is not None and want_port != fport:
                continue
            if want_length is not None and want_length != end:
                continue
            if prefix and not payload.startswith(prefix):
                continue
            if sequence is not None:
                return _run_sequence(sequence, payload, {}, repeat, want_length is None)
            if end < size:
                raise DecodeError(f"payload is {end} bytes, the layout needs {size}", reason="truncated")
            data: dict[str, Any] = {}
            run(payload, 0, data)
            if repeat is not None:
                return Decoded(data, _read_blocks(payload, size, repeat, data))
            warnings = (
                (f"{end - size} trailing bytes not decoded",) if want_length is None and end > size else ()
            )
            return Decoded(data, warnings)
        raise DecodeError(
            f"no layout of this profile matches a {end}-byte payload on fport {fport}",
            reason="unknown_layout",
        )

    def decode(payload: bytes) -> Decoded:
        # Without an fPort only layouts that do not ask for one can match.
        return decode_port(0, payload)

    return CompiledDecoder(
        family="fixed", decode=decode, outputs=tuple(outputs.values()), decode_port=decode_port
    )


# ----------------------------------------------------------------------- families

FAMILIES: Final[Mapping[str, Callable[[Spec], CompiledDecoder]]] = {
    "channel_tlv": compile_channel_tlv,
    "sensor_flags": compile_sensor_flags,
    "fixed": compile_fixed,
}


def compile_decoder(spec: Spec) -> CompiledDecoder:
    """Compile a profile's ``decoder`` section with the family it names."""
    if not isinstance(spec.value, dict):
        raise spec.fail("must be a mapping with a 'family'")
    family = spec["family"].as_choice(FAMILIES)
    return FAMILIES[family](spec)
