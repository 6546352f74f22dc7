"""Uplink payload layouts ("families") compiled from a profile's ``decoder`` section.

Owns the ``Decoded`` result and the payload layouts a profile may choose with
``decoder.family``. Today there is one family, ``channel_tlv``: the Milesight-style
stream of ``channel_id (1 B), channel_type (1 B), data (N B)`` records where the
pair of header bytes selects a fixed-size group of fields. Each family compiles its
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.codec.fields import CompiledField, Output, Spec, compile_field
from gateway.errors import DecodeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decoded:
    """The decoded object of one payload and the warnings raised while decoding it.

    ``data`` uses the vendor decoder's output keys so platforms built on the vendor
    codec keep working; ``warnings`` are one-line human-readable notes (an unknown
    channel) that do not invalidate ``data``.
    """

    data: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledDecoder:
    """A profile's uplink layout, compiled: the decode function and what its outputs mean."""

    family: str
    decode: Callable[[bytes], Decoded]
    outputs: tuple[Output, ...]


# ------------------------------------------------------------------ channel_tlv

_ChannelRun = Callable[[bytes, int, dict[str, Any]], None]
_CHANNEL_KEYS: Final = ("channel_id", "channel_type")


def _channel_run(fields: list[CompiledField], specs: list[Spec] | None = None) -> tuple[int, _ChannelRun]:
    """One closure that writes a record's fields into the output dict; returns (size, run).

    A field's offset is its ``at`` or the end of the field before it. Hidden fields
    only feed ``{placeholders}`` of later names in the same record.
    """
    steps: list[tuple[str, int, Callable[[bytes, int], Any], bool, bool]] = []
    offset = 0
    size = 0
    hidden_names: set[str] = set()
    for index, compiled in enumerate(fields):
        at = compiled.at if compiled.at is not None else offset
        offset = at + compiled.size
        size = max(size, offset)
        for placeholder in compiled.placeholders:
            if placeholder not in hidden_names:
                where = specs[index] if specs is not None else None
                message = f"placeholder {{{placeholder}}} needs a hidden field of that name before it"
                if where is not None:
                    raise where.fail(message)
                raise ValueError(message)
        if compiled.hidden:
            hidden_names.add(compiled.output.name)
        steps.append((compiled.output.name, at, compiled.read, compiled.hidden, bool(compiled.placeholders)))
    frozen_steps = tuple(steps)

    if not hidden_names:
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

    def run_scoped(buf: bytes, pos: int, out: dict[str, Any]) -> None:
        scope: dict[str, Any] = {}
        for name, field_offset, read, hidden, templated in frozen_steps:
            value = read(buf, pos + field_offset)
            if hidden:
                scope[name] = value
            elif templated:
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
    spec.mapping(required=("family", "channels"), optional=("endian", "description"))
    endian_spec = spec.get("endian")
    default_endian = endian_spec.as_choice(("le", "be")) if endian_spec is not None else None

    table: dict[int, tuple[int, _ChannelRun]] = {}
    where: dict[int, str] = {}
    outputs: dict[str, Output] = {}
    channels = list(spec["channels"].items())
    if not channels:
        raise spec["channels"].fail("must list at least one channel")
    for channel in channels:
        if not isinstance(channel.value, dict):
            raise channel.fail("must be a mapping with channel_id, channel_type and a field")
        channel_ids = _channel_ids(channel["channel_id"])
        channel_type = channel["channel_type"].as_int(0, 0xFF)

        fields: list[CompiledField] = []
        if channel.has("fields"):
            channel.mapping(required=(*_CHANNEL_KEYS, "fields"))
            field_specs = list(channel["fields"].items())
            if not field_specs:
                raise channel["fields"].fail("must list at least one field")
            for field_spec in field_specs:
                fields.append(compile_field(field_spec, default_endian=default_endian))
            names = [compiled.output.name for compiled in fields]
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise field_specs[index]["name"].fail(f"duplicate output {name!r} in this channel")
        else:
            fields.append(compile_field(channel, default_endian=default_endian, extra_keys=_CHANNEL_KEYS))

        owners = _field_specs(channel)
        for compiled, owner in zip(fields, owners, strict=True):
            if not compiled.hidden:
                _merge_output(outputs, compiled.output, owner)

        entry = _channel_run(fields, owners)
        for channel_id in channel_ids:
            key = (channel_id << 8) | channel_type
            if key in table:
                raise channel.fail(
                    f"duplicate channel {channel_id:02x} {channel_type:02x} (already at {where[key]})"
                )
            table[key] = entry
            where[key] = channel.path

    return CompiledDecoder(family="channel_tlv", decode=_tlv_decoder(table), outputs=tuple(outputs.values()))


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


def _tlv_decoder(table: Mapping[int, tuple[int, _ChannelRun]]) -> Callable[[bytes], Decoded]:
    lookup = dict(table).get

    def decode(payload: bytes) -> Decoded:
        data: dict[str, Any] = {}
        end = len(payload)
        pos = 0
        while pos < end:
            if pos + 2 > end:
                raise DecodeError(f"channel header cut off at byte {pos}", reason="truncated")
            entry = lookup((payload[pos] << 8) | payload[pos + 1])
            if entry is None:
                warning = (
                    f"unknown channel {payload[pos]:02x} {payload[pos + 1]:02x} at byte {pos}: "
                    f"last {end - pos} bytes not decoded"
                )
                return Decoded(data, (warning,))
            size, run = entry
            start = pos + 2
            pos = start + size
            if pos > end:
                raise DecodeError(
                    f"channel {payload[start - 2]:02x} {payload[start - 1]:02x} at byte {start - 2} "
                    f"needs {size} data bytes, {end - start} left",
                    reason="truncated",
                )
            run(payload, start, data)
        return Decoded(data, ())

    return decode


# ----------------------------------------------------------------------- families

FAMILIES: Final[Mapping[str, Callable[[Spec], CompiledDecoder]]] = {
    "channel_tlv": compile_channel_tlv,
}


def compile_decoder(spec: Spec) -> CompiledDecoder:
    """Compile a profile's ``decoder`` section with the family it names."""
    if not isinstance(spec.value, dict):
        raise spec.fail("must be a mapping with a 'family'")
    family = spec["family"].as_choice(FAMILIES)
    return FAMILIES[family](spec)
