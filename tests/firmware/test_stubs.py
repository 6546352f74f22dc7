"""The firmware type-checks against MicroPython's own stubs (PyPI ``micropython-esp32-stubs``).

mypy runs on ``firmware/`` with the stub distribution's MicroPython standard library as its
typeshed (``micropython-stdlib-stubs``: ``time.ticks_ms``, ``os`` without ``os.path``, ...) and
its port modules (``machine``, ``onewire``, ``ds18x20``, ...) on the search path, so a call the
ESP32 port does not have (a wrong ``machine.Pin`` argument, a CPython-only function) fails here.
The firmware carries no annotations (MicroPython has no ``typing`` at run time), so mypy checks
the bodies with ``--check-untyped-defs`` against the annotated stubs. The stubs themselves have
errors of their own (mypy reports them because they sit on MYPYPATH): only lines about
firmware files count. The stubs come with the dev extras; without them the test fails.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
STUBS = "micropython-esp32-stubs"
STDLIB = "micropython-stdlib-stubs"
# Errors tolerated by exact text, with why (none today).
KNOWN: set[str] = set()


def _dist_files(name: str) -> tuple[Path, list[str]]:
    dist = importlib.metadata.distribution(name)
    files = [str(f) for f in dist.files or () if str(f).endswith(".pyi") or str(f).endswith("VERSIONS")]
    return Path(str(dist.locate_file(""))), files


@pytest.fixture(scope="module")
def stub_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    try:
        importlib.metadata.version(STUBS)
    except importlib.metadata.PackageNotFoundError:
        # The dev extras install them: a missing package is a broken install, not a reason to skip.
        pytest.fail(f"{STUBS} is not installed (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("mpstubs")
    typeshed, port = root / "typeshed", root / "port"
    base, files = _dist_files(STDLIB)
    for rel in files:
        # stdlib/ and stubs/ (mypy_extensions) form a typeshed; _mpy_shed/ is imported by the port stubs.
        dest = (typeshed if rel.split("/")[0] in ("stdlib", "stubs") else port) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, dest)
    base, files = _dist_files(STUBS)
    for rel in files:
        dest = port / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, dest)
    return typeshed, port


def _mypy(typeshed: Path, port: Path, cache: Path, *targets: str) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "",
            "--custom-typeshed-dir",
            str(typeshed),
            "--no-site-packages",
            "--check-untyped-defs",
            "--explicit-package-bases",
            "--no-error-summary",
            "--cache-dir",
            str(cache),
            *targets,
        ],
        cwd=FIRMWARE,
        env={"MYPYPATH": str(port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert not any("Failed to find builtin module" in line for line in lines), lines
    return [line for line in lines if ": error:" in line and not line.startswith(str(port))]


def test_firmware_type_checks_against_micropython_esp32_stubs(
    stub_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    typeshed, port = stub_dirs
    errors = _mypy(typeshed, port, tmp_path / "cache", "lorawan", "drivers", "nodes", "sensors", "main.py")
    assert [e for e in errors if e not in KNOWN] == []


def test_the_check_catches_a_call_the_port_does_not_have(
    stub_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    typeshed, port = stub_dirs
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import machine\nimport time\n\ndef f():\n    time.monotonic()\n    machine.Pin(1).nosuch()\n"
    )
    errors = _mypy(typeshed, port, tmp_path / "cache", str(bad))
    assert len(errors) == 2, errors
    assert "monotonic" in errors[0] and "nosuch" in errors[1]
