"""What every atheris harness shares: the import path, a Chooser over FuzzedDataProvider, the seed corpus.

A harness is ``fuzz_<parser>.py``: it imports its targets from ``tests/fuzz/targets.py`` under
``atheris.instrument_imports`` (so coverage guides the fuzzer through ``gateway``),
and calls :func:`main` with a one-input function and its seed inputs. Run from anywhere::

    python fuzz/fuzz_udp.py -max_total_time=60

Without a corpus directory on the command line, the seeds are written to a fresh temporary
directory that libFuzzer then grows; crash reproducers land in the current directory
(``-artifact_prefix=`` to move them), and ``python fuzz/fuzz_udp.py crash-<sha1>`` replays one.

Inputs start with one mode byte: even = the rest is given to the parser as is, odd = the
rest drives a structure-aware mutation of a valid seed (``tests/fuzz/mutate.py``).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import atheris  # type: ignore[import-untyped]  # noqa: E402  (after the path: run from any directory)


class FdpChooser:
    """A ``tests.fuzz.mutate.Chooser`` taking its decisions from the fuzzer's bytes."""

    def __init__(self, data: bytes) -> None:
        self._fdp = atheris.FuzzedDataProvider(data)

    def integer(self, lo: int, hi: int) -> int:
        return int(self._fdp.ConsumeIntInRange(lo, hi))

    def blob(self, max_size: int) -> bytes:
        return bytes(self._fdp.ConsumeBytes(self._fdp.ConsumeIntInRange(0, max_size)))


RAW = 0
STRUCTURED = 1


def split_mode(data: bytes) -> tuple[int, bytes]:
    """(RAW or STRUCTURED, the rest of the input)."""
    if not data:
        return RAW, b""
    return data[0] & 1, data[1:]


def raw_seed(seed: bytes) -> bytes:
    return bytes((RAW,)) + seed


def structured_seed(choices: bytes = b"") -> bytes:
    return bytes((STRUCTURED,)) + choices


def main(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Run libFuzzer on ``test_one_input``, seeding a temporary corpus unless one is given."""
    logging.disable(logging.CRITICAL)  # refused inputs are logged by the agent; not here
    argv = list(sys.argv)
    has_corpus = any(not arg.startswith("-") for arg in argv[1:])
    if not has_corpus:
        corpus = tempfile.mkdtemp(prefix=f"edgegw-{Path(argv[0]).stem}-")
        for index, seed in enumerate(seeds):
            Path(corpus, f"seed-{index:03d}").write_bytes(seed)
        # A few structured inputs with different decision bytes, so structured mode starts off varied.
        for index in range(16):
            Path(corpus, f"structured-{index:03d}").write_bytes(structured_seed(os.urandom(32)))
        argv.append(corpus)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def yaml_harness(texts: list[str], check: Callable[[str], None]) -> Callable[[bytes], None]:
    """The one-input function of a YAML file's harness (config, rules): raw text, or a
    structure-aware mutation of one of ``texts``, given to ``check``."""
    import yaml

    from tests.fuzz import mutate

    docs = [yaml.safe_load(text) for text in texts]

    def test_one_input(data: bytes) -> None:
        mode, rest = split_mode(data)
        if mode == RAW:
            check(rest.decode("utf-8", errors="replace"))
            return
        ch = FdpChooser(rest)
        index = ch.integer(0, len(texts) - 1)
        check(mutate.mutate_yaml(ch, docs[index], texts[index]))

    return test_one_input
