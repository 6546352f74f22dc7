"""Agent updates from the platform: a verified package installed beside the running one, switched
to on a restart, kept only if the new version proves healthy, rolled back otherwise.

Owns the files under ``<data_dir>/agent/`` and the decisions about them:

* ``versions/<version>/``: an installed version, the ``gateway`` package unpacked from the wheel
  (pure Python: the dependencies stay those of the base install);
* ``current.json``: which version to run (absent: the base install, what pip put in the venv);
* ``trial.json``: the version being tried, the one before it, how many times it was started,
  and whether radio frames were flowing before the switch (the health check then wants them again);
* ``update-state.json``: the last outcome (applied / rolled back, with the reason), until reported.

The base install is always what starts first (``edgegw run`` from the venv): ``launch()`` counts
the start of a trial, rolls back after ``MAX_TRIAL_STARTS`` starts that never confirmed (a version
that crashes at import can never roll itself back), and tells the caller which version directory
to run. The running version confirms or rolls back its own trial (``gateway.app.updates``).
The package itself is authenticated by the signed command that announced its SHA-256; the chunks
that carry it are not signed one by one. It does not own the transfer nor MQTT.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.errors import CommandRejected
from gateway.fsutil import write_atomic

log = logging.getLogger(__name__)

AGENT_DIR = "agent"
BASE = "base"
MAX_TRIAL_STARTS = 3
MAX_PACKAGE_BYTES = 32 * 1024 * 1024
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
INIT_VERSION = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.M)
"""The ``__version__ = "..."`` line of a package's ``gateway/__init__.py``: the version it installs as."""


@dataclass(frozen=True, slots=True)
class Trial:
    version: str
    previous: str
    starts: int
    frames_flowing: bool


class Updates:
    """The agent's versions on this gateway (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / AGENT_DIR
        self.versions = self.root / "versions"
        self._current = self.root / "current.json"
        self._trial = self.root / "trial.json"
        self._state = self.root / "update-state.json"

    # --- what runs ---------------------------------------------------------------------------

    def current(self) -> str:
        try:
            return str(json.loads(self._current.read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return BASE

    def trial(self) -> Trial | None:
        try:
            return Trial(**json.loads(self._trial.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def path_of(self, version: str) -> Path | None:
        """The directory to put first on the module path for ``version`` (None: the base install)."""
        if version == BASE:
            return None
        path = self.versions / version
        return path if (path / "gateway" / "__init__.py").is_file() else None

    def launch(self) -> Path | None:
        """At each start, before the agent's code is chosen: count a trial's start, roll a trial
        back after ``MAX_TRIAL_STARTS`` unconfirmed starts, and return the version directory to run."""
        trial = self.trial()
        if trial is not None:
            if trial.starts >= MAX_TRIAL_STARTS:
                self.rollback(f"started {trial.starts} times without passing its health check")
            else:
                self._write(self._trial, {**asdict(trial), "starts": trial.starts + 1})
        version = self.current()
        path = self.path_of(version)
        if version != BASE and path is None:  # removed by hand, or a half-installed tree
            log.error("agent version %s is not installed; running the base install", version)
        return path

    # --- installing and switching ----------------------------------------------------------

    def install(self, version: str, package: bytes, sha256: str) -> Path:
        """Unpack a verified package (a wheel: a zip with the ``gateway`` package) as ``version``."""
        if hashlib.sha256(package).hexdigest() != sha256.lower():
            raise CommandRejected("the package's SHA-256 is not the one signed", reason="bad_package")
        try:
            archive = zipfile.ZipFile(io.BytesIO(package))
            names = archive.namelist()
            init = archive.read("gateway/__init__.py").decode("utf-8")
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
            raise CommandRejected(f"not an edgegw wheel: {exc}", reason="bad_package") from exc
        found = INIT_VERSION.search(init)
        if found is None or found.group(1) != version:
            said = found.group(1) if found else "none"
            raise CommandRejected(f"the package is version {said}, not {version}", reason="bad_package")
        for name in names:  # nothing may land outside the version's directory
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts:
                raise CommandRejected(f"unsafe path in the package: {name}", reason="bad_package")
        target, staging = self.versions / version, self.versions / f".{version}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        archive.extractall(staging)
        # A wheel carries the device profiles as data files (<name>.data/data/share/edgegw/...):
        # beside the package, where the version looks for them first (codec.default_profiles_dir).
        for shipped in staging.glob("*.data/data/share/edgegw/device_profiles"):
            shipped.rename(staging / "device_profiles")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target

    def activate(self, version: str, *, frames_flowing: bool) -> None:
        """Run ``version`` from the next start on, on trial."""
        trial = Trial(version, self.current(), 0, frames_flowing)
        self._write(self._trial, asdict(trial))
        self._write(self._current, {"version": version})

    def confirm(self) -> Trial | None:
        """The running trial passed its health check: it stays."""
        trial = self.trial()
        if trial is None:
            return None
        self._trial.unlink(missing_ok=True)
        self._outcome("applied", trial, None)
        return trial

    def rollback(self, reason: str) -> None:
        """Back to the version before the trial (kept installed), from the next start on."""
        trial = self.trial()
        if trial is None:
            return
        self._write(self._current, {"version": trial.previous})
        self._trial.unlink(missing_ok=True)
        self._outcome("rolled_back", trial, reason)
        log.error("agent update to %s rolled back to %s: %s", trial.version, trial.previous, reason)

    # --- reporting -----------------------------------------------------------------------------

    def _outcome(self, status: str, trial: Trial, reason: str | None) -> None:
        doc = {"status": status, "version": trial.version, "previous": trial.previous, "reason": reason}
        self._write(self._state, {**doc, "at_s": time.time(), "reported": False})

    def unreported(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self._state.read_text())
        except (OSError, ValueError):
            return None
        return None if doc.get("reported") else doc

    def mark_reported(self) -> None:
        doc = self.unreported()
        if doc is not None:
            self._write(self._state, {**doc, "reported": True})

    @staticmethod
    def _write(path: Path, doc: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(doc, sort_keys=True).encode() + b"\n")
