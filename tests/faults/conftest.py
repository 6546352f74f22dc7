"""Real faults for the fault-injection suite: a small filesystem that really fills and frees, the RSS
of a process as the kernel counts it.

Each test module in ``tests/faults/`` causes one kind of fault a Pi meets in the field against the
real agent (or the real stage) and asserts what docs/outbox.md promises: no committed record lost
(duplicates allowed), the agent alive, its memory bounded. Helpers of one topic live in that topic's
test module; only what several need is here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.reliability.conftest import persistent_broker as persistent_broker  # the fault tests use it too

RSS_LIMIT_MIB = 120.0
"""The issue's bound on the agent's resident memory under any flood (a 1 GB Pi runs other things)."""


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from ``/proc/<pid>/status`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class SmallDisk:
    """A tmpfs of ``size_mib`` mounted at ``path``: it fills like a real SD card does (ENOSPC, SQLITE_FULL).

    ``fill()`` writes an outside file until the filesystem refuses more; ``free()`` deletes it.
    """

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path = path
        self.size_mib = size_mib
        self.ballast = path / "outside-ballast.bin"

    def fill(self) -> int:
        """Fill every free byte with an outside file; returns the bytes written."""
        written = 0
        chunk = b"\0" * 65536
        with open(self.ballast, "ab", buffering=0) as out:
            while True:
                try:
                    n = out.write(chunk)
                except OSError:
                    break
                if not n:
                    break
                written += n
            # The last partial block: tmpfs may still take a few bytes.
            for size in (4096, 512, 1):
                try:
                    while out.write(b"\0" * size):
                        written += size
                except OSError:
                    continue
        return written

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@contextmanager
def mounted_tmpfs(mount: Path, size_mib: int) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mib`` at ``mount`` (created), unmounted afterwards. Needs root: CI runs as
    root on Debian; the fault needs a real filesystem that fills, not a flag that imitates one."""
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root (CI runs as root; run make test as root)")
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        yield SmallDisk(mount, size_mib)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs under the test's directory."""
    with mounted_tmpfs(tmp_path / "disk", 16) as disk:
        yield disk
