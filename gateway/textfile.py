"""The text files edgegw is given: how they are read, decoded and parsed as YAML.

Owns the one way the agent and the CLI read a file a person wrote or edited (the config,
rules, device profiles and their JavaScript codecs, CSV imports, identity files): bytes read
with a bound, decoded as UTF-8 (a UTF-8 byte-order mark, which Windows editors and spreadsheets
add, is accepted and dropped), and YAML parsed by one safe loader that refuses a repeated key
(PyYAML keeps the last one silently: ``port: 1883`` then ``port: 8883`` would hide a mistake)
and reads merge keys (``<<: *defaults``) one way for every file (``StrictLoader``).

Every failure is a ``ConfigError`` with a one-line reason that names the file, e.g.::

    /etc/edgegw/rules.yaml: not UTF-8 (byte 0xc9 at line 3, column 12): save the file as UTF-8
    /etc/edgegw/edgegw.yaml: not valid YAML: line 7, column 3: duplicate key 'port' (first on line 4)

It does not own what a document means: each reader validates its own schema, with
``gateway.yamldoc`` (typed getters whose errors name the key path).
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from typing import Any, Final

import yaml

from gateway.errors import ConfigError, NotUtf8

MAX_TEXT_BYTES: Final = 16 * 1024 * 1024
"""Larger than any config, rules file, profile or device CSV; a mistaken path (a log, a disk image,
``/dev/zero``) is refused before it fills the memory of a Pi."""

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
MAX_YAML_NODES: Final = 200_000
"""Nodes a YAML document may expand to, aliases included (the largest profile has a few thousand)."""


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``, at most ``max_bytes``; ConfigError naming the file otherwise."""
    file = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO given as a file must not block the agent's loop waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError("not a regular file", file=file)
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from exc
    if len(data) > max_bytes:
        raise ConfigError(f"larger than {max_bytes} bytes: not a text file for edgegw?", file=file)
    return data


def decode(data: bytes, *, file: str) -> str:
    """``data`` as text: UTF-8, a leading byte-order mark dropped; NotUtf8 naming the first bad byte."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    elif data.startswith(_UTF16_BOMS):
        raise NotUtf8(
            file, byte=None, line=1, column=1, reason="not UTF-8 but UTF-16: save the file as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        # Everything before the first bad byte decodes, so the column counts characters, as editors do.
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        byte = data[exc.start]
        reason = f"not UTF-8 (byte 0x{byte:02x} at line {line}, column {column}): save the file as UTF-8"
        raise NotUtf8(file, byte=byte, line=line, column=column, reason=reason) from exc


def read_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Read and decode a text file (see ``read_bytes`` and ``decode``)."""
    return decode(read_bytes(path, max_bytes=max_bytes), file=os.fspath(path))


PARSED_CACHE_DOCS: Final = 64
"""Parsed documents kept by their text's hash (``parse_yaml``): the device profiles, the config and
the rules, read again by every `edgegw` command run in one process (the tests, `edgegw demo`)."""
PARSED_CACHE_MAX_CHARS: Final = 64 * 1024
"""Only documents up to this size are kept: the cache stays within a few MB on a Pi."""
_parsed: OrderedDict[bytes, Any] = OrderedDict()
_parsed_lock = threading.Lock()


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse YAML with the safe loader that refuses repeated keys; ConfigError with line and column.

    The same text parsed again in this process is a copy of the first result: the pure-Python
    parser takes about 40 ms for a device profile, and the profiles are read by every command."""
    if len(text) > PARSED_CACHE_MAX_CHARS:
        return _parse_yaml(text, file=file)
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    with _parsed_lock:
        known = _parsed.get(key, _parsed)
        if known is not _parsed:
            _parsed.move_to_end(key)
    if known is not _parsed:
        return copy.deepcopy(known)  # the caller may change what it gets
    data = _parse_yaml(text, file=file)  # a refused document raises: nothing is kept
    with _parsed_lock:
        _parsed[key] = copy.deepcopy(data)
        while len(_parsed) > PARSED_CACHE_DOCS:
            _parsed.popitem(last=False)
    return data


def _parse_yaml(text: str, *, file: str) -> Any:
    try:
        loader = StrictLoader(text)  # a SafeLoader subclass: no object construction
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            expanded = _expanded_nodes(node, {})
            if expanded > MAX_YAML_NODES:
                # Anchors and aliases are shared, not copied, until something walks the data (an
                # error message's repr, a rule's matching): nine nested aliases are a billion nodes.
                raise ConfigError(
                    f"not valid YAML: aliases expand to more than {MAX_YAML_NODES} nodes", file=file
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"not valid YAML: {where}{problem}", file=file) from exc
    except yaml.YAMLError as exc:  # e.g. ReaderError: a control character; its text spans lines
        raise ConfigError(f"not valid YAML: {' '.join(str(exc).split())}", file=file) from exc
    except ValueError as exc:  # PyYAML builds timestamps with datetime: 2001-02-30 raises ValueError
        raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
    except RecursionError as exc:  # PyYAML composes nested collections recursively
        raise ConfigError("not valid YAML: nested too deeply", file=file) from exc


def _expanded_nodes(node: yaml.Node, seen: dict[int, int]) -> int:
    """Nodes of the document once every alias is expanded (each shared node counted per use)."""
    known = seen.get(id(node))
    if known is not None:
        return known
    seen[id(node)] = MAX_YAML_NODES + 1  # a node inside itself (a recursive alias) is "too many"
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_nodes(child, seen)
            if total > MAX_YAML_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_nodes(key, seen) + _expanded_nodes(value, seen)
            if total > MAX_YAML_NODES:
                break
    seen[id(node)] = total
    return total


def load_yaml(path: str | os.PathLike[str], *, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """Read, decode and parse a YAML file."""
    return parse_yaml(read_text(path, max_bytes=max_bytes), file=os.fspath(path))


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a repeated mapping key is an error naming the key and both lines.

    Merge keys (``<<: *defaults``) are YAML's, as PyYAML's safe loader reads them: the keys a mapping
    gives itself override the merged ones, and of ``<<: [*a, *b]`` the first mapping listed wins.
    A key repeated inside one mapping (a merged one included) and a second ``<<`` in one mapping
    (whose mapping would win is a trap: the list form says it) are refused.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        # Checked on the document as written, before any mapping is built: building a mapping
        # flattens its merged mappings in place, which would make a merged key look repeated.
        _refuse_repeated_keys(self, node)
        return super().construct_document(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Replace ``node``'s ``<<`` by the pairs it merges, so that building the mapping (where a
        later pair wins) gives its own keys over merged ones, and the first of ``<<: [*a, *b]`` over
        the next. PyYAML's own keeps the first pair of each key string it meets, which lets a merged
        mapping's merged key win over that mapping's own (``<<: &mid {<<: *base, x: 2}`` gave
        base's x), so it is not used."""
        own = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]
        if len(own) == len(node.value):
            return
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                continue
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in reversed(sources):  # the first listed goes last: it wins
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"<< merges mappings, not a {source.id}", source.start_mark
                    )
                self.flatten_mapping(source)  # once per node: afterwards it has no << left
                merged += source.value
        node.value = merged + own


def _refuse_repeated_keys(loader: StrictLoader, root: yaml.Node) -> None:
    """ConstructorError at the first key given twice in one mapping of ``root`` (each node once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias: the same node, checked once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            _refuse_repeated_keys_in(loader, node)
            for key_node, value_node in node.value:
                stack += (key_node, value_node)


def _refuse_repeated_keys_in(loader: StrictLoader, node: yaml.MappingNode) -> None:
    first_line: dict[object, int] = {}
    merge_line: int | None = None
    for key_node, _value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            if merge_line is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '<<' (first on line {merge_line}): merge several with <<: [*a, *b]",
                    key_node.start_mark,
                )
            merge_line = line
            continue
        if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping as a key: unhashable, refused
            continue  # when the mapping is built
        key = loader.construct_object(key_node)  # so that 1 and 0x1, or yes and true, are the same key
        try:
            first = first_line.get(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
            )
        first_line[key] = line
