"""Input mutators shared by the hypothesis tests (tests/fuzz) and the atheris harnesses (fuzz/).

Every mutator takes a ``Chooser`` — the source of decisions — so the same code is driven by
hypothesis' ``draw`` in CI and by atheris' ``FuzzedDataProvider`` on demand. Mutations are
the classic ones (bit flips, byte sets, truncation, insertion, deletion, duplication) for
bytes and text, plus structure-aware ones for JSON documents (Semtech datagrams, command
envelopes), YAML documents (config, rules) and CSV rows (device import): a field removed,
retyped, replaced by an awkward value, nested, renamed or duplicated.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Protocol

import yaml


class Chooser(Protocol):
    """Where a mutator takes its decisions from."""

    def integer(self, lo: int, hi: int) -> int:
        """An integer in lo..hi (both included)."""

    def blob(self, max_size: int) -> bytes:
        """Up to ``max_size`` arbitrary bytes."""


def pick(ch: Chooser, items: list[Any] | tuple[Any, ...]) -> Any:
    return items[ch.integer(0, len(items) - 1)]


# Values that break naive parsers: wrong types, limits, non-finite numbers, unicode, markup.
AWKWARD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    255,
    256,
    65535,
    2**31,
    2**32,
    2**63,
    -(2**63),
    10**30,
    10**400,
    0.5,
    -0.0,
    1e308,
    "",
    " ",
    "0",
    "-1",
    "x",
    "NaN",
    "inf",
    "1e999",
    "\x00",
    "\ud7ff\u202e\U0001f600",
    "é" * 3,
    "A" * 300,
    "SF7BW125",
    "4/5",
    "LORA",
    "FSK",
    "00" * 8,
    "zz",
    [],
    [None],
    {},
    {"a": 1},
)

# Raw JSON tokens json.dumps will not produce (json.loads accepts the first three).
RAW_JSON_TOKENS: tuple[str, ...] = ("1e400", "-1e400", "1" + "0" * 5000, "NaN", "Infinity", "1.", "01")
_RAW_MARK = "\x00raw{}\x00"


def mutate_bytes(ch: Chooser, data: bytes, max_ops: int = 4) -> bytes:
    out = bytearray(data)
    for _ in range(ch.integer(1, max_ops)):
        action = ch.integer(0, 6)
        if action == 0 and out:  # flip one bit
            index = ch.integer(0, len(out) - 1)
            out[index] ^= 1 << ch.integer(0, 7)
        elif action == 1 and out:  # set one byte
            out[ch.integer(0, len(out) - 1)] = ch.integer(0, 255)
        elif action == 2:  # truncate
            del out[ch.integer(0, len(out)) :]
        elif action == 3:  # insert
            at = ch.integer(0, len(out))
            out[at:at] = ch.blob(16)
        elif action == 4 and out:  # delete a run
            at = ch.integer(0, len(out) - 1)
            del out[at : at + ch.integer(1, 8)]
        elif action == 5 and out:  # duplicate a run
            at = ch.integer(0, len(out) - 1)
            out[at:at] = out[at : at + ch.integer(1, 16)]
        elif action == 6 and out:  # set a byte to a boundary value
            out[ch.integer(0, len(out) - 1)] = pick(ch, (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x22))
    return bytes(out)


def mutate_text(ch: Chooser, text: str, tokens: tuple[str, ...] = ()) -> str:
    """Byte mutations of the UTF-8 text (undecodable bytes replaced), or a token inserted."""
    if tokens and ch.integer(0, 2) == 0:
        at = ch.integer(0, len(text))
        return text[:at] + str(pick(ch, tokens)) + text[at:]
    return mutate_bytes(ch, text.encode("utf-8")).decode("utf-8", errors="replace")


_MAX_PATH_DEPTH = 24


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a JSON-like tree, the root included, down to a bounded depth."""
    found = [prefix]
    if len(prefix) >= _MAX_PATH_DEPTH:
        return found  # deep nesting is one of the mutations: do not walk into what it built
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def mutate_tree(ch: Chooser, doc: Any, extra_values: tuple[Any, ...] = ()) -> Any:
    """A copy of a JSON-like tree with 1..3 structural mutations."""
    root: Any = json.loads(json.dumps(doc))  # a deep copy, and only JSON types
    values = AWKWARD_VALUES + extra_values
    for _ in range(ch.integer(1, 3)):
        path = pick(ch, _paths(root))
        node = _get(root, path)
        action = ch.integer(0, 6)
        if not path:
            if action == 0:
                root = copy.deepcopy(pick(ch, values))
            elif action == 1:
                root = [root]
            continue
        parent, key = _get(root, path[:-1]), path[-1]
        if action == 0:  # remove
            del parent[key]
        elif action == 1:  # replace with an awkward value
            parent[key] = copy.deepcopy(pick(ch, values))
        elif action == 2:  # wrap in a list / an object
            parent[key] = [node] if ch.integer(0, 1) else {"x": node}
        elif action == 3:  # retype: number <-> string
            parent[key] = (
                str(node) if not isinstance(node, str) else (len(node) if ch.integer(0, 1) else node * 2)
            )
        elif action == 4 and isinstance(parent, dict):  # add an unknown or duplicated key
            parent[pick(ch, ("extra", f"{key}_", str(key).upper(), ""))] = copy.deepcopy(node)
        elif action == 5 and isinstance(parent, list):  # duplicate an entry
            parent.insert(ch.integer(0, len(parent)), copy.deepcopy(node))
        elif action == 6:  # deep nesting
            for _ in range(ch.integer(1, 200)):
                node = [node]
            parent[key] = node
    return root


def mutate_json(ch: Chooser, doc: Any, extra_values: tuple[Any, ...] = ()) -> bytes:
    """JSON text of a mutated tree; sometimes a value becomes a raw token json.dumps cannot write."""
    tree = mutate_tree(ch, doc, extra_values)
    raw: dict[str, str] = {}
    if ch.integer(0, 3) == 0:
        paths = [p for p in _paths(tree) if p]
        if paths:
            path = pick(ch, paths)
            mark = _RAW_MARK.format(len(raw))
            raw[json.dumps(mark)] = pick(ch, RAW_JSON_TOKENS)
            _get(tree, path[:-1])[path[-1]] = mark
    text = json.dumps(tree, separators=(",", ":"))
    for quoted, token in raw.items():
        text = text.replace(quoted, token)
    encoded = text.encode("utf-8", errors="surrogatepass")
    if ch.integer(0, 4) == 0:
        encoded = mutate_bytes(ch, encoded, max_ops=2)
    return encoded


# YAML fragments that exercise the loader rather than the schema (timestamps, tags, anchors,
# complex keys, flow collections, special floats, unterminated constructs).
YAML_TOKENS: tuple[str, ...] = (
    "2001-02-30",
    "2024-13-01 25:61:00",
    "!!binary AAA",
    "!!binary '@@'",
    "!!python/object:os.system",
    "!!int 'x'",
    "!!float 'y'",
    "!!timestamp 'z'",
    "&a [*a]",
    "*undefined",
    "? [a, b]\n: 1\n",
    "{[1]: 2}",
    "{{a: 1}: 2}",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "9" * 400,
    "1" * 5000,
    "\n  - ",
    "\t",
    "[",
    "{",
    '"\\ud800"',
    '"\\0"',
    "'unterminated",
    "|\n  block\n",
    "%YAML 1.1\n---\n",
    "---\n...\n",
    "~",
    "<<: {a: 1}",
)
YAML_VALUES: tuple[Any, ...] = (
    float("nan"),
    float("inf"),
    -1e-300,
    [[[[]]]],
    {"all": []},
    {"param": "x"},
    "$x",
    "sunset+" + "9" * 20 + "min",
    "sunset+" + "9" * 5000 + "min",
    "25:00",
    "Europe/Paris",
    "Europe",
    "../../etc/passwd",
    "group:x",
)


def mutate_yaml(ch: Chooser, doc: Any, text: str) -> str:
    """Either the document with structural mutations dumped again, or its text with loader tokens."""
    if ch.integer(0, 1):
        tree = _yaml_tree_mutations(ch, doc)
        try:
            return yaml.safe_dump(tree, allow_unicode=True, default_flow_style=bool(ch.integer(0, 1)))
        except RecursionError:  # PyYAML's emitter recurses; JSON is YAML too, and the loader must cope
            return json.dumps(tree)
    return mutate_text(ch, text, YAML_TOKENS)


def _yaml_tree_mutations(ch: Chooser, doc: Any) -> Any:
    tree = mutate_tree(ch, doc, YAML_VALUES[3:])
    if ch.integer(0, 3) == 0:  # non-finite floats survive a YAML round trip, unlike JSON
        paths = [p for p in _paths(tree) if p]
        if paths:
            path = pick(ch, paths)
            _get(tree, path[:-1])[path[-1]] = pick(ch, YAML_VALUES[:3])
    return tree


CSV_CELLS: tuple[str, ...] = (
    "",
    " ",
    "x",
    "0",
    "-0",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "1e-999",
    "91",
    "-181",
    "abp",
    "otaa",
    "OTAA",
    "0" * 16,
    "0" * 17,
    "0" * 32,
    "f" * 8,
    "g" * 16,
    "00:11:22:33:44:55:66:77",
    "٣٣",
    '"',
    '""',
    "a,b",
    "\x00",
    "\r",
    "#comment",
    "param.x",
    "param.Bad-Name",
    "param.level_mm",
    "dev_eui",
    "A" * 200,
    "9" * 5000,
)


def mutate_csv(ch: Chooser, rows: list[list[str]]) -> str:
    """CSV text of ``rows`` with cell, row and column mutations, sometimes then byte-mutated."""
    table = [list(row) for row in rows]
    for _ in range(ch.integer(1, 4)):
        if not table:
            table.append([])
        r = ch.integer(0, len(table) - 1)
        action = ch.integer(0, 5)
        if action == 0 and table[r]:  # awkward cell
            table[r][ch.integer(0, len(table[r]) - 1)] = pick(ch, CSV_CELLS)
        elif action == 1:  # extra cell
            table[r].insert(ch.integer(0, len(table[r])), pick(ch, CSV_CELLS))
        elif action == 2 and table[r]:  # missing cell
            del table[r][ch.integer(0, len(table[r]) - 1)]
        elif action == 3:  # duplicate a row
            table.insert(ch.integer(0, len(table)), list(table[r]))
        elif action == 4:  # drop a row
            del table[r]
        elif action == 5 and len(table) > 1:  # swap two rows (the header may move)
            s = ch.integer(0, len(table) - 1)
            table[r], table[s] = table[s], table[r]
    text = "\n".join(",".join(_csv_cell(cell) for cell in row) for row in table) + "\n"
    if ch.integer(0, 4) == 0:
        text = mutate_text(ch, text)
    return text


def _csv_cell(cell: str) -> str:
    return f'"{cell.replace(chr(34), chr(34) * 2)}"' if any(c in cell for c in ',"\n') else cell
