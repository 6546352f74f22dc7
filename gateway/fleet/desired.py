"""The desired configuration pushed by the platform: its payload, its hash, and its validation, pure.

Owns the meaning of a ``config`` envelope's payload (docs/fleet.md)::

    {"config": {"version": "2026-11-25.1",
                "settings": {<sections of the agent YAML, an overlay over the local file>},
                "rules": "<rules YAML text>" | null}}

its canonical hash (what "identical" means), and how the overlay is merged over the local
file's raw YAML and checked with the same loader as local files (``gateway.config.loads``).
It does not own the signature checks (``gateway.fleet.trust``), the state files
(``gateway.fleet.config_store``) nor when a configuration is applied
(``gateway.fleet.remote_config``). No files, no clock.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway import config
from gateway.errors import CommandRejected, ConfigError
from gateway.fleet.envelope import Rejection, reject

MAX_VERSION_CHARS = 64
# Settings the local file keeps: the overlay may repeat them, never change them.
LOCAL_ONLY = (("gateway", "id"), ("data_dir",))


@dataclass(frozen=True, slots=True)
class DesiredConfig:
    """One configuration as the platform sent it (and as the state files keep it)."""

    version: str
    settings: dict[str, Any]
    rules: str | None

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON of version, settings and rules: equal hash, same config."""
        doc = {"version": self.version, "settings": self.settings, "rules": self.rules}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "settings": self.settings, "rules": self.rules}

    @classmethod
    def from_dict(cls, doc: Any) -> DesiredConfig:
        """From ``{"version", "settings", "rules"}``; ``CommandRejected`` (malformed) otherwise."""
        if not isinstance(doc, dict):
            raise reject(Rejection.MALFORMED, "config must be a JSON object")
        unknown = sorted(set(doc) - {"version", "settings", "rules"})
        if unknown:
            raise reject(Rejection.MALFORMED, f"unknown config fields: {unknown}")
        version, settings, rules = doc.get("version"), doc.get("settings", {}), doc.get("rules")
        if not isinstance(version, str) or not 0 < len(version) <= MAX_VERSION_CHARS:
            raise reject(
                Rejection.MALFORMED, f"config.version must be a string of 1-{MAX_VERSION_CHARS} chars"
            )
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise reject(Rejection.MALFORMED, "config.settings must be a JSON object (sections of the YAML)")
        if rules is not None and not isinstance(rules, str):
            raise reject(Rejection.MALFORMED, "config.rules must be the rules YAML as a string, or null")
        return cls(version, settings, rules)


def from_payload(payload: Mapping[str, Any]) -> DesiredConfig:
    """The configuration in an envelope's payload ``{"config": {...}}``."""
    if set(payload) != {"config"}:
        raise reject(
            Rejection.MALFORMED, 'a config envelope\'s payload is {"config": {...}} and nothing else'
        )
    return DesiredConfig.from_dict(payload["config"])


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def effective(
    local_raw: Mapping[str, Any],
    desired: DesiredConfig | None,
    *,
    rules_path: Path,
    file: str,
    local: config.Config,
    environ: Mapping[str, str] | None = None,
) -> config.Config:
    """The configuration the agent runs with: ``local_raw`` (the local file's YAML) with the
    desired settings over it, and ``rules.path`` pointing at ``rules_path`` when the desired
    configuration carries rules. ``ConfigError`` (with the key path) if it is not valid or
    changes what only the local file may set; ``local`` is that file's own validated config."""
    if desired is None:
        return local
    overlay = desired.settings
    for path in LOCAL_ONLY:
        value = _get(overlay, path)
        if value is not None and value != _get(dataclasses_raw(local), path):
            raise ConfigError(
                "only the local configuration file may set this (a pushed configuration may not change it)",
                file=file,
                key_path=".".join(path),
            )
    if desired.rules is not None:
        if _get(overlay, ("rules", "path")) is not None:
            raise ConfigError(
                "set by the pushed rules text: leave it out of the settings", file=file, key_path="rules.path"
            )
        overlay = merge(overlay, {"rules": {"path": str(rules_path)}})
    merged = merge(local_raw, overlay)
    try:
        text = yaml.safe_dump(merged, default_flow_style=False, sort_keys=False)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot be written as YAML: {exc}", file=file) from exc
    cfg = config.loads(text, file=file, environ=environ)
    return dataclasses.replace(cfg, source=local.source)


def dataclasses_raw(cfg: config.Config) -> dict[str, Any]:
    """A validated config as the raw mapping it could have been read from (without ``source``)."""
    doc = dataclasses.asdict(cfg)
    doc.pop("source", None)
    return doc


def local_raw(cfg: config.Config) -> dict[str, Any]:
    """The raw YAML mapping of the local file ``cfg`` was read from (``cfg.source``), or, for a
    config not read from a file (tests, benchmarks), the config itself as a mapping."""
    path = Path(cfg.source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"cannot read the local configuration again: {exc}", file=cfg.source) from exc
    return raw if isinstance(raw, dict) else dataclasses_raw(cfg)


def rejected_reason(exc: CommandRejected | ConfigError) -> str:
    """The short code reported for a refused configuration."""
    return "invalid" if isinstance(exc, ConfigError) else exc.reason
