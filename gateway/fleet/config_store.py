"""The state files of pushed configuration under ``<data_dir>/fleet/``, written atomically.

Owns four files (docs/fleet.md, "Configuration push")::

    config-good.json    the last known good: {"v": 1, "config": {version, settings, rules}, "hash", "at"}
    config-trial.json   applied, waiting for the broker: the same, plus "starts" (agent starts with it)
    config-failed.json  the last reverted one: {"v": 1, "version", "hash", "reason", "code", "at", "reported"}
    rules.yaml          the rules text of the configuration in effect (``rules.path`` points here)

Each is written to a temporary file, fsynced, renamed, and the directory fsynced, so a power
cut leaves the old or the new file, never half of one. It does not own what the
configurations mean (``gateway.fleet.desired``) nor when they change (``gateway.fleet.remote_config``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import CommandRejected, StorageError
from gateway.fleet.desired import DesiredConfig
from gateway.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

FLEET_DIR = "fleet"
GOOD_FILE = "config-good.json"
TRIAL_FILE = "config-trial.json"
FAILED_FILE = "config-failed.json"
RULES_FILE = "rules.yaml"


@dataclass(frozen=True, slots=True)
class FailedConfig:
    version: str
    hash: str
    reason: str
    code: str
    at: str
    reported: bool


class ConfigStore:
    """Last known good, trial and failed configuration of one gateway (``<data_dir>/fleet``)."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / FLEET_DIR
        self.rules_path = self.directory / RULES_FILE

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Written atomically, so this is damage from outside: say so, run without it.
            log.error("%s is unreadable, ignored: %s", path, exc)
            return None
        if not isinstance(doc, dict):
            log.error("%s is not a JSON object, ignored", path)
            return None
        return doc

    def _write(self, name: str, doc: dict[str, Any]) -> None:
        path = self.directory / name
        try:
            write_atomic(path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}") from exc

    def _remove(self, name: str) -> None:
        path = self.directory / name
        try:
            path.unlink()
            fsync_dir(self.directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot remove {path}: {exc}") from exc

    def _desired(self, name: str) -> DesiredConfig | None:
        doc = self._read(name)
        if doc is None:
            return None
        try:
            return DesiredConfig.from_dict(doc.get("config"))
        except CommandRejected as exc:
            log.error("%s is not a configuration state file, ignored: %s", self.directory / name, exc)
            return None

    # --- reading ---------------------------------------------------------------------------

    def good(self) -> DesiredConfig | None:
        return self._desired(GOOD_FILE)

    def trial(self) -> DesiredConfig | None:
        return self._desired(TRIAL_FILE)

    def trial_starts(self) -> int:
        doc = self._read(TRIAL_FILE) or {}
        starts = doc.get("starts", 0)
        return starts if isinstance(starts, int) else 0

    def failed(self) -> FailedConfig | None:
        doc = self._read(FAILED_FILE)
        if doc is None:
            return None
        try:
            return FailedConfig(
                str(doc["version"]), str(doc["hash"]), str(doc["reason"]), str(doc["code"]),
                str(doc["at"]), bool(doc["reported"]),
            )  # fmt: skip
        except KeyError as exc:
            log.error("%s lacks %s, ignored", self.directory / FAILED_FILE, exc)
            return None

    # --- writing ---------------------------------------------------------------------------

    def write_good(self, desired: DesiredConfig, at: str) -> None:
        self._write(GOOD_FILE, {"v": 1, "config": desired.to_dict(), "hash": desired.hash, "at": at})

    def write_trial(self, desired: DesiredConfig, at: str, starts: int = 0) -> None:
        doc = {"v": 1, "config": desired.to_dict(), "hash": desired.hash, "at": at, "starts": starts}
        self._write(TRIAL_FILE, doc)

    def promote_trial(self, desired: DesiredConfig, at: str) -> None:
        """The trial reached the broker: it is the last known good from now on."""
        self.write_good(desired, at)
        self._remove(TRIAL_FILE)

    def fail_trial(self, desired: DesiredConfig, reason: str, code: str, at: str) -> None:
        """Give the trial up: remember it as failed (not applied again), back to the good one."""
        doc = {
            "v": 1, "version": desired.version, "hash": desired.hash, "reason": reason, "code": code,
            "at": at, "reported": False,
        }  # fmt: skip
        self._write(FAILED_FILE, doc)
        self._remove(TRIAL_FILE)

    def mark_failed_reported(self) -> None:
        doc = self._read(FAILED_FILE)
        if doc is not None and not doc.get("reported"):
            self._write(FAILED_FILE, {**doc, "reported": True})

    def write_rules(self, text: str) -> bool:
        """Make ``rules.yaml`` hold ``text``; False (nothing written) if it already does."""
        try:
            if self.rules_path.read_text(encoding="utf-8") == text:
                return False
        except (OSError, UnicodeDecodeError):
            pass  # missing or damaged: write it
        try:
            write_atomic(self.rules_path, text.encode("utf-8"))
        except OSError as exc:
            raise StorageError(f"cannot write {self.rules_path}: {exc}") from exc
        return True
