"""Nested and variable payload layouts: objects, lists, type-tagged regions, conditional fields.

Owns ``compile_sequence``: a profile's field list compiled into a ``Sequence`` that reads its
fields one after another with a cursor, for payloads whose layout is decided by the bytes
themselves (NAS UL20xx status, usage and boot packets):

* ``type: object`` + ``fields`` — a nested mapping; inside it, ``at`` counts from the object's
  first byte (a sub-record), so several bit fields of one byte can sit at a cursor position;
  its own ``at`` places it in the record, ``append: true`` adds it to a list under its name
  (Milesight ``20 ce`` history), ``inline: true`` writes its fields into the enclosing mapping
  (a group sharing one ``at`` and one condition: Milesight ``f8`` answers);
* ``type: list`` + ``fields`` — a list of mappings, one per item; ``count: <earlier field>``
  items, or items up to the end of the enclosing region;
* ``type: tlv`` + ``channels`` — records of one type byte and that type's fields, collected
  into one mapping, within ``length: <earlier field>`` bytes or up to the end of the region;
  an unknown type skips the rest of the region with a warning (the vendor decoders stop
  there too); ``single: true`` reads one record (the type byte picks the layout of what
  follows), ``inline: true`` writes its fields into the enclosing mapping;
* ``if: <earlier field>`` — the field is present only when that value is true, ``unless``
  when it is false; an absent field with an ``at`` keeps its place, one without ``at`` takes
  no bytes;
* ``optional: true`` — the field (or list) is left out when the region has ended before it;
* a ``hex`` span — ``size: rest`` (to the end of the region) or ``length: <earlier field>``.

Names in ``if``, ``unless``, ``count`` and ``length`` (of a tlv or a hex span) refer to earlier fields of the
same record (hidden ones included); an object shares its record's names, a list item and a tlv
record start afresh.

It does not own scalar field types (``fields.py``) nor the families that use a sequence
(``decode.py``). Pure: bytes in, values out, ``DecodeError`` (reason ``truncated``, ...) on a
payload that does not fit. Only profiles that use these constructs pay for the cursor; plain
fixed-size records keep the flat readers of ``decode.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from gateway.codec.fields import SPAN_REST, Output, Reader, SpanReader, Spec, compile_field
from gateway.errors import DecodeError

logger = logging.getLogger(__name__)

STRUCTURES: Final = ("object", "list", "tlv")
MAX_ITEMS: Final = 256
"""Upper bound on the items of one list (a LoRaWAN payload has at most 242 bytes)."""

_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")
_STRUCT_KEYS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # type: (required keys besides name/type/quantity, optional keys)
    "object": (("fields",), ("at", "append", "inline", "if", "unless", "description")),
    "list": (("fields",), ("count", "if", "unless", "optional", "description")),
    "tlv": (("channels",), ("length", "single", "inline", "if", "unless", "description")),
}

Scope = dict[str, Any]


def needs_sequence(items: list[Spec]) -> bool:
    """True when a field list uses a construct of this module (so it needs the cursor reader)."""
    for item in items:
        value = item.value
        if isinstance(value, dict) and (
            value.get("type") in STRUCTURES
            or "if" in value
            or "unless" in value
            or "optional" in value
            or value.get("size") == SPAN_REST
            or "length" in value
        ):
            return True
    return False


class Region(NamedTuple):
    """Where a record is read: ``buf`` from ``base`` (where ``at`` counts from) to ``end``.

    ``warnings`` collects what a decode notes without failing (an unknown tlv type), for the
    whole payload: nested records share their parent's list. A tuple, not a frozen dataclass:
    one is made per nested record on the decode path, and a tuple is made ~4x faster.
    """

    buf: bytes
    base: int
    end: int
    warnings: list[str]

    def nested(self, base: int, end: int | None = None) -> Region:
        """The region of a record nested at ``base`` (an object, a list item, a tlv record)."""
        return Region(self.buf, base, self.end if end is None else end, self.warnings)


class Sequence:
    """A compiled field list; ``run`` reads it from the start of a region."""

    __slots__ = ("steps",)

    def __init__(self, steps: tuple[_Step, ...]) -> None:
        self.steps = steps

    def run(self, region: Region, out: dict[str, Any], scope: Scope) -> int:
        """Read the fields from ``region.base`` into ``out``; returns the cursor after them."""
        base = pos = region.base
        for step in self.steps:
            # `if: x` reads the step when x is true, `unless: x` when it is false.
            if step.cond is not None and bool(scope.get(step.cond)) is step.negate:
                if step.at is not None:
                    pos = base + step.at + step.size  # an absent field with an `at` keeps its place
                continue
            pos = step.read_into(region, pos, out, scope)
        return pos


class _Step:
    """One entry of a sequence (scalar field, object, list or tlv region)."""

    __slots__ = ("at", "cond", "name", "negate", "size")

    def __init__(
        self, name: str, cond: str | None, at: int | None = None, size: int = 0, *, negate: bool = False
    ) -> None:
        self.name = name
        self.cond = cond
        self.negate = negate
        self.at = at
        self.size = size

    def read_into(self, region: Region, pos: int, out: dict[str, Any], scope: Scope) -> int:
        """Read this step at ``pos`` (or at its ``at``) into ``out``; returns the cursor after it."""
        raise NotImplementedError  # pragma: no cover - every step kind overrides it


class _Scalar(_Step):
    __slots__ = ("expansion", "hidden", "optional", "read", "span", "templated")

    def __init__(
        self,
        name: str,
        cond: str | None,
        at: int | None,
        size: int,
        read: Reader,
        *,
        hidden: bool,
        templated: bool,
        optional: bool,
        expansion: tuple[Callable[[int, int], list[int]], str, str, str] | None,
        span: tuple[str, SpanReader] | None = None,
    ) -> None:
        super().__init__(name, cond, at, size)
        self.read = read
        self.hidden = hidden
        self.templated = templated
        self.optional = optional
        self.expansion = expansion
        self.span = span

    def read_into(self, region: Region, pos: int, out: dict[str, Any], scope: Scope) -> int:
        buf, base, end, _ = region  # one unpacking: this runs for every field of a payload
        start = base + self.at if self.at is not None else pos
        if self.span is not None:
            return self._read_span(region, start, pos, out, scope)
        if start + self.size > end:
            if self.optional and start >= end:
                return pos
            raise DecodeError(
                f"field {self.name!r} at byte {start} needs {self.size} bytes, {max(end - start, 0)} left",
                reason="truncated",
            )
        value = self.read(buf, start)
        if self.expansion is not None:
            expand, count_from, prefix, suffix = self.expansion
            for number, item in enumerate(expand(value, scope[count_from]), start=1):
                out[f"{prefix}{number}{suffix}"] = item
            return start + self.size
        scope[self.name] = value
        if not self.hidden:
            out[self.name.format_map(scope) if self.templated else self.name] = value
        return start + self.size

    def _read_span(self, region: Region, start: int, pos: int, out: dict[str, Any], scope: Scope) -> int:
        """A hex span: to the region's end, or as many bytes as an earlier field says."""
        assert self.span is not None
        count_from, read_span = self.span
        end = region.end
        if self.optional and start >= end:
            return pos
        if count_from == SPAN_REST:
            count = max(end - start, 0)
        else:
            count = scope[count_from]
            if not isinstance(count, int) or isinstance(count, bool):
                raise DecodeError(f"{self.name}: length {count!r} is not a number", reason="bad_count")
            if start + count > end:
                raise DecodeError(
                    f"field {self.name!r} at byte {start} announces {count} bytes, "
                    f"{max(end - start, 0)} left",
                    reason="truncated",
                )
        value = read_span(region.buf, start, count)
        scope[self.name] = value
        if not self.hidden:
            out[self.name] = value
        return start + count


class _Object(_Step):
    __slots__ = ("append", "body", "inline")

    def __init__(
        self,
        name: str,
        cond: str | None,
        body: Sequence,
        at: int | None,
        size: int,
        *,
        append: bool,
        inline: bool,
    ) -> None:
        super().__init__(name, cond, at, size)
        self.body = body
        self.append = append
        self.inline = inline

    def read_into(self, region: Region, pos: int, out: dict[str, Any], scope: Scope) -> int:
        start = region.base + self.at if self.at is not None else pos
        if self.inline:  # a group of fields sharing one `at`/`if`, written into the enclosing mapping
            return self.body.run(region.nested(start), out, scope)
        child: dict[str, Any] = {}
        pos = self.body.run(region.nested(start), child, scope)
        if self.append:
            # Several records add to one list (Milesight `20 ce` history entries).
            out.setdefault(self.name, []).append(child)
        else:
            out[self.name] = child
        return pos


class _List(_Step):
    __slots__ = ("body", "count_from", "optional")

    def __init__(
        self, name: str, cond: str | None, body: Sequence, count_from: str | None, *, optional: bool = False
    ) -> None:
        super().__init__(name, cond)
        self.body = body
        self.count_from = count_from
        self.optional = optional

    def read_into(self, region: Region, pos: int, out: dict[str, Any], scope: Scope) -> int:
        end = region.end
        if self.optional and pos >= end:
            return pos  # NAS decodeStatusRequest: no `drivers` key when no byte follows
        count: int | None = None
        if self.count_from is not None:
            count = scope[self.count_from]
            if not isinstance(count, int) or isinstance(count, bool):
                raise DecodeError(f"{self.name}: count {count!r} is not a number", reason="bad_count")
        items: list[dict[str, Any]] = []
        while pos < end if count is None else len(items) < count:
            if len(items) >= MAX_ITEMS:
                raise DecodeError(f"{self.name}: more than {MAX_ITEMS} items", reason="too_many_items")
            item: dict[str, Any] = {}
            after = self.body.run(region.nested(pos), item, {})
            if after <= pos:  # every item field absent: stop rather than loop forever
                raise DecodeError(f"{self.name}: an item at byte {pos} reads no bytes", reason="bad_layout")
            items.append(item)
            pos = after
        out[self.name] = items
        return pos


class _Tlv(_Step):
    __slots__ = ("inline", "length_from", "single", "table")

    def __init__(
        self,
        name: str,
        cond: str | None,
        table: dict[int, Sequence],
        length_from: str | None,
        *,
        single: bool = False,
        inline: bool = False,
    ) -> None:
        super().__init__(name, cond)
        self.table = table
        self.length_from = length_from
        self.single = single
        self.inline = inline

    def read_into(self, region: Region, pos: int, out: dict[str, Any], scope: Scope) -> int:
        buf, region_end = region.buf, region.end
        if self.length_from is not None:
            length = scope[self.length_from]
            if not isinstance(length, int) or isinstance(length, bool):
                raise DecodeError(f"{self.name}: length {length!r} is not a number", reason="bad_count")
            region_end = pos + length
            if region_end > region.end:
                raise DecodeError(
                    f"{self.name} announces {length} bytes at byte {pos}, {region.end - pos} left",
                    reason="truncated",
                )
        records: dict[str, Any] = out if self.inline else {}
        lookup = self.table.get
        if self.single and pos >= region_end:
            raise DecodeError(f"{self.name}: type byte at byte {pos} is missing", reason="truncated")
        while pos < region_end:
            body = lookup(buf[pos])
            if body is None:
                # The length (or the payload's end) still frames what follows: skip, keep going.
                region.warnings.append(
                    f"{self.name}: unknown type {buf[pos]:02x} at byte {pos}, "
                    f"{region_end - pos} bytes skipped"
                )
                pos = region_end
                break
            pos = body.run(region.nested(pos + 1, region_end), records, {})
            if self.single:
                break  # one record: the type byte picks the layout of what follows
        if not self.inline:
            out[self.name] = records
        return pos


# ------------------------------------------------------------------------ compile


@dataclass(slots=True)
class _Layout:
    """Compile-time state of one record: names in scope and the static cursor (None once variable)."""

    known: set[str]
    hidden: set[str]
    cursor: int | None = 0
    extent: int | None = 0


@dataclass(frozen=True, slots=True)
class CompiledSequence:
    """A sequence and its size in bytes when every payload gives the same (else None)."""

    sequence: Sequence
    size: int | None


def compile_sequence(
    spec: Spec,
    *,
    default_endian: str | None,
    outputs: dict[str, Output],
    extra_keys: tuple[str, ...] = (),
) -> CompiledSequence:
    """Compile a list of field descriptions (``spec``) into a ``Sequence``.

    ``outputs`` receives the outputs of this level. The size is known when no construct
    lets the payload decide it (a ``channel_tlv`` record then has a fixed size; otherwise
    it ends where its sequence ends).
    """
    items = list(spec.items())
    if not items:
        raise spec.fail("must list at least one field")
    layout = _Layout(known=set(), hidden=set())
    sequence = _compile_items(items, default_endian, outputs, layout, extra_keys=extra_keys)
    static = layout.cursor is not None and layout.extent is not None
    return CompiledSequence(sequence, layout.extent if static else None)


def _compile_items(
    items: list[Spec],
    default_endian: str | None,
    outputs: dict[str, Output],
    layout: _Layout,
    *,
    extra_keys: tuple[str, ...] = (),
) -> Sequence:
    steps: list[_Step] = []
    for item in items:
        if not isinstance(item.value, dict):
            raise item.fail("must be a mapping describing a field")
        cond, negate = _condition(item, layout.known)
        kind = item.value.get("type")
        if kind in STRUCTURES:
            step: _Step = _compile_structure(item, str(kind), cond, default_endian, outputs, layout)
        else:
            step = _compile_scalar(item, cond, default_endian, outputs, layout, extra_keys)
        step.negate = negate
        steps.append(step)
    return Sequence(tuple(steps))


def _condition(item: Spec, known: set[str]) -> tuple[str | None, bool]:
    """``if: x`` → (x, False); ``unless: x`` → (x, True); neither → (None, False)."""
    if item.has("if") and item.has("unless"):
        raise item["unless"].fail("a field takes 'if' or 'unless', not both")
    if item.has("unless"):
        return _reference(item, "unless", known), True
    return _reference(item, "if", known), False


def _reference(item: Spec, key: str, known: set[str]) -> str | None:
    ref_spec = item.get(key)
    if ref_spec is None:
        return None
    name = ref_spec.as_str(pattern=_REF_RE, hint="the name of an earlier field")
    if name not in known:
        raise ref_spec.fail(f"{name!r} must name an earlier field of this record")
    return name


def _add_output(outputs: dict[str, Output], output: Output, item: Spec) -> None:
    if output.name in outputs:
        raise item["name"].fail(f"duplicate output {output.name!r}")
    outputs[output.name] = output


def _advance(layout: _Layout, at: int | None, size: int, *, variable: bool) -> None:
    """Move the static cursor past a field of ``size`` bytes (at ``at`` or the cursor)."""
    start = at if at is not None else layout.cursor
    if start is None:
        layout.cursor = layout.extent = None
        return
    if layout.extent is not None:
        layout.extent = max(layout.extent, start + size)
    layout.cursor = None if variable and at is None else start + size


def _compile_scalar(
    item: Spec,
    cond: str | None,
    default_endian: str | None,
    outputs: dict[str, Output],
    layout: _Layout,
    extra_keys: tuple[str, ...],
) -> _Scalar:
    compiled = compile_field(
        item, default_endian=default_endian, extra_keys=("if", "unless", "optional", *extra_keys)
    )
    optional_spec = item.get("optional")
    optional = optional_spec.as_bool() if optional_spec is not None else False
    span: tuple[str, SpanReader] | None = None
    if compiled.span is not None:
        assert compiled.read_span is not None  # compile_field sets both
        if compiled.span != SPAN_REST and compiled.span not in layout.known:
            raise item["length"].fail(f"{compiled.span!r} must name an earlier field of this record")
        if compiled.placeholders or compiled.expand is not None:
            raise item.fail("a hex span takes no placeholders")
        span = (compiled.span, compiled.read_span)
    name = compiled.output.name
    for placeholder in compiled.placeholders:
        if placeholder not in layout.hidden:
            raise item.fail(f"placeholder {{{placeholder}}} needs a hidden field of that name before it")
    expansion = None
    if compiled.expand is not None:
        assert compiled.count_from is not None  # compile_field sets both
        if compiled.count_from not in layout.known:
            raise item.fail(f"count {compiled.count_from!r} must name an earlier field of this record")
        prefix, _, suffix = name.partition("{n}")
        expansion = (compiled.expand, compiled.count_from, prefix, suffix)
    if compiled.hidden:
        layout.hidden.add(name)
    else:
        _add_output(outputs, compiled.output, item)
    layout.known.add(name)
    _advance(layout, compiled.at, compiled.size, variable=optional or cond is not None)
    if span is not None:
        layout.cursor = layout.extent = None  # the bytes a span takes are known only while decoding
    return _Scalar(
        name,
        cond,
        compiled.at,
        compiled.size,
        compiled.read,
        hidden=compiled.hidden,
        templated=bool(compiled.placeholders),
        optional=optional,
        expansion=expansion,
        span=span,
    )


def _compile_structure(
    item: Spec,
    kind: str,
    cond: str | None,
    default_endian: str | None,
    outputs: dict[str, Output],
    layout: _Layout,
) -> _Step:
    required, optional = _STRUCT_KEYS[kind]
    item.mapping(required=("name", "type", "quantity", *required), optional=optional)
    name = item["name"].as_str(pattern=_NAME_RE, hint="letters, digits and _")
    children: dict[str, Output] = {}
    step: _Step
    if kind == "object":
        # An object is a sub-record: `at` inside counts from its first byte; it shares the names.
        # With an `at` the object starts at that byte of the record (it may read bytes again).
        inner = _Layout(known=layout.known, hidden=layout.hidden)
        inline_spec, append_spec = item.get("inline"), item.get("append")
        inline = inline_spec.as_bool() if inline_spec is not None else False
        if inline and append_spec is not None:
            raise append_spec.fail("an inline object has no key of its own to append to")
        body = _compile_items(
            _non_empty(item["fields"]), default_endian, outputs if inline else children, inner
        )
        at_spec = item.get("at")
        at = at_spec.as_int(0, 255) if at_spec is not None else None
        static = inner.cursor is not None and inner.extent is not None
        step = _Object(
            name,
            cond,
            body,
            at,
            inner.extent if static and inner.extent is not None else 0,
            append=append_spec.as_bool() if append_spec is not None else False,
            inline=inline,
        )
        start = at if at is not None else layout.cursor
        if start is None or inner.cursor is None or inner.extent is None:
            layout.cursor = layout.extent = None
        else:
            if layout.extent is not None:
                layout.extent = max(layout.extent, start + inner.extent)
            layout.cursor = None if cond is not None and at is None else start + inner.cursor
    elif kind == "list":
        count_from = _reference(item, "count", layout.known)
        inner = _Layout(known=set(), hidden=set())
        body = _compile_items(_non_empty(item["fields"]), default_endian, children, inner)
        optional_spec = item.get("optional")
        step = _List(
            name,
            cond,
            body,
            count_from,
            optional=optional_spec.as_bool() if optional_spec is not None else False,
        )
        layout.cursor = layout.extent = None
    else:
        length_from = _reference(item, "length", layout.known)
        single_spec, inline_spec = item.get("single"), item.get("inline")
        inline = inline_spec.as_bool() if inline_spec is not None else False
        step = _Tlv(
            name,
            cond,
            _compile_tlv_table(item["channels"], default_endian, outputs if inline else children),
            length_from,
            single=single_spec.as_bool() if single_spec is not None else False,
            inline=inline,
        )
        layout.cursor = layout.extent = None
    if isinstance(step, _Tlv | _Object) and step.inline:
        return step  # its fields' outputs are this level's, declared while compiling them
    description_spec = item.get("description")
    _add_output(
        outputs,
        Output(
            name=name,
            quantity=item["quantity"].as_str(),
            description=description_spec.as_str() if description_spec is not None else "",
            fields=tuple(children.values()),
        ),
        item,
    )
    layout.known.add(name)
    return step


def _non_empty(spec: Spec) -> list[Spec]:
    items = list(spec.items())
    if not items:
        raise spec.fail("must list at least one field")
    return items


def _compile_tlv_table(
    spec: Spec, default_endian: str | None, outputs: dict[str, Output]
) -> dict[int, Sequence]:
    """``channels`` of a tlv region: one type byte each, a single inline field or ``fields``."""
    table: dict[int, Sequence] = {}
    channels = _non_empty(spec)
    for channel in channels:
        if not isinstance(channel.value, dict):
            raise channel.fail("must be a mapping with channel_type and a field")
        type_byte = channel["channel_type"].as_int(0, 0xFF)
        if type_byte in table:
            raise channel["channel_type"].fail(f"duplicate channel_type {type_byte:02x}")
        record_outputs: dict[str, Output] = {}
        inner = _Layout(known=set(), hidden=set())
        if channel.has("fields"):
            channel.mapping(required=("channel_type", "fields"))
            items = _non_empty(channel["fields"])
            extra: tuple[str, ...] = ()
        else:
            items, extra = [channel], ("channel_type",)
        table[type_byte] = _compile_items(items, default_endian, record_outputs, inner, extra_keys=extra)
        for output in record_outputs.values():
            known = outputs.get(output.name)
            if known is not None and (known.quantity, known.unit) != (output.quantity, output.unit):
                raise channel.fail(
                    f"output {output.name!r} is declared earlier with another quantity or unit"
                )
            outputs[output.name] = output
    return table
