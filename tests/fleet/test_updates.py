"""The agent's versions on disk (gateway.fleet.updates): what a package must be to be installed,
and the start counting that rolls back a version that never gets to run its own health check."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from gateway.errors import CommandRejected
from gateway.fleet.updates import BASE, MAX_TRIAL_STARTS, Updates


def wheel(version: str, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("gateway/__init__.py", f'"""edgegw."""\n__version__ = "{version}"\n')
        z.writestr("gateway/__main__.py", "")
        z.writestr(f"edgegw-{version}.data/data/share/edgegw/device_profiles/a/b.yaml", "id: a/b\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out.getvalue()


def install(updates: Updates, version: str, data: bytes) -> Path:
    return updates.install(version, data, hashlib.sha256(data).hexdigest())


def test_a_package_installs_beside_the_base_with_its_profiles(tmp_path: Path) -> None:
    updates = Updates(tmp_path)
    path = install(updates, "2.0.0", wheel("2.0.0"))
    assert (path / "gateway" / "__init__.py").is_file()
    assert (path / "device_profiles" / "a" / "b.yaml").is_file()  # the wheel's data files, beside it
    assert updates.current() == BASE and updates.launch() is None  # installed, not yet switched to


@pytest.mark.parametrize(
    ("version", "data", "why"),
    [
        ("2.0.0", wheel("2.0.1"), "is version 2.0.1, not 2.0.0"),
        ("2.0.0", b"not a zip", "not an edgegw wheel"),
        ("2.0.0", wheel("2.0.0", {"../../evil.py": b"x"}), "unsafe path"),
    ],
)
def test_a_package_that_is_not_the_version_announced_or_not_safe_is_refused(
    tmp_path: Path, version: str, data: bytes, why: str
) -> None:
    with pytest.raises(CommandRejected, match=why):
        install(Updates(tmp_path), version, data)
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "agent" / "versions" / version).exists()


def test_a_package_whose_hash_is_not_the_signed_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandRejected, match="SHA-256"):
        Updates(tmp_path).install("2.0.0", wheel("2.0.0"), "0" * 64)


def test_a_version_that_never_confirms_is_rolled_back_after_its_starts(tmp_path: Path) -> None:
    updates = Updates(tmp_path)
    install(updates, "2.0.0", wheel("2.0.0"))
    updates.activate("2.0.0", frames_flowing=True)
    for start in range(1, MAX_TRIAL_STARTS + 1):  # e.g. it crashes at import, again and again
        assert updates.launch() == tmp_path / "agent" / "versions" / "2.0.0"
        trial = updates.trial()
        assert trial is not None and trial.starts == start and trial.previous == BASE
    assert updates.launch() is None  # back to the base install, on its own
    assert updates.current() == BASE and updates.trial() is None
    state = updates.unreported()
    assert state is not None and state["status"] == "rolled_back" and "without passing" in state["reason"]
    updates.mark_reported()
    assert updates.unreported() is None


def test_a_confirmed_version_stays(tmp_path: Path) -> None:
    updates = Updates(tmp_path)
    install(updates, "2.0.0", wheel("2.0.0"))
    updates.activate("2.0.0", frames_flowing=False)
    updates.launch()
    assert updates.confirm() is not None
    for _ in range(MAX_TRIAL_STARTS + 2):
        assert updates.launch() == tmp_path / "agent" / "versions" / "2.0.0"
    state = updates.unreported()
    assert state is not None and state["status"] == "applied"
