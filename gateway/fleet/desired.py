"""The desired configuration pushed by the platform: its payload, its hash, and its validation, pure.

Owns the meaning of a ``config`` envelope's payload (docs/fleet.md)::

    {"config": {"version": "2026-11-25.1",
                "settings": {<sections of the agent YAML, an overlay over the local file>},
                "rules": "<rules YAML text>" | null}}

its canonical hash (what "identical" means), how the overlay is merged over the local
file's raw YAML and checked with the same loader as local files (``gateway.config.loads``),
which keys only the local file may change (``LOCAL_ONLY``, widened by the local
``fleet.remote_settable``, never for ``NEVER_REMOTE``), and which outbox bounds would evict
committed records (``eviction_risks``). It does not own the signature checks
(``gateway.fleet.trust``), the state files (``gateway.fleet.config_store``) nor when a
configuration is applied (``gateway.fleet.remote_config``). No files, no clock.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway import config, textfile
from gateway.errors import CommandRejected, ConfigError
from gateway.fleet.signed_envelope import Rejection, reject

MAX_VERSION_CHARS = 64
LOCAL_ONLY = (
    "mqtt.tls", "mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file", "mqtt.username", "mqtt.password",
    "mqtt.host", "mqtt.port", "mqtt.client_id", "mqtt.topic_prefix", "radio.url",
    "rules.path", "data_dir", "profiles_dir", "fleet.*",
    "outbox.disk_reserve_bytes", "outbox.memory_queue_records",
    # The antenna is on the mast, not in the platform: a pushed lower gain would raise the radiated power.
    "radio.antenna_gain_dbi",
)  # fmt: skip
"""Keys (globs) a push may change only when the local ``fleet.remote_settable`` lists them: how and
where the gateway connects and with which secrets (a signed push is one stolen platform key away
from pointing a whole fleet at another broker in clear text), the radio's bind address, and every
file path (a pushed ``rules.path`` can make the agent read any file it can, keystore.key included),
and what the gateway keeps for a full disk (a pushed reserve or memory queue sized for another card).
A push may repeat the local value; changing it is refused. Pushed rules *text* stays allowed: it is
written to ``<data_dir>/fleet/rules.yaml`` and ``rules.path`` points there."""
NEVER_REMOTE = ("gateway.id", "data_dir", "fleet.remote_settable")
"""Local-only whatever ``fleet.remote_settable`` lists: the identity, where the state files live,
and the list itself (a push must not widen its own rights)."""
LOCAL_ONLY_CODE = "local_only"
WOULD_EVICT_CODE = "would_evict"
EVICTION_HEADROOM_MIN_BYTES = 1 << 20
"""A lower ``outbox.max_bytes`` must leave this much (or a quarter of what is held, if more) above
what the outbox holds now: records keep arriving between the check and the restart, and after."""
EVICTION_HEADROOM_S = 3600.0
"""A lower ``outbox.max_age_s`` must keep the oldest record at least this long (a broker outage
during the change must not expire the backlog)."""


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
    configuration carries rules. ``ConfigError`` (with the key path) if it is not valid;
    ``CommandRejected`` (reason ``local_only``, naming every such key) if it changes what only the
    local file may set; ``local`` is that file's own validated config."""
    if desired is None:
        return local
    overlay = desired.settings
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
    changed = local_only_changes(local, cfg, pushed_rules_path=str(rules_path) if desired.rules else None)
    if changed:
        raise CommandRejected(
            f"{file}: changes {', '.join(changed)}, which only the local configuration file sets "
            "(it may allow keys in fleet.remote_settable; never gateway.id, data_dir nor "
            "fleet.remote_settable): refused whole",
            reason=LOCAL_ONLY_CODE,
        )
    return dataclasses.replace(cfg, source=local.source)


def _leaves(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_local_only(key: str, remote_settable: tuple[str, ...]) -> bool:
    """True when a push may not change ``key`` (a dotted key) under ``remote_settable`` (globs)."""
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in NEVER_REMOTE):
        return True
    if not any(fnmatch.fnmatchcase(key, pattern) for pattern in LOCAL_ONLY):
        return False
    return not any(fnmatch.fnmatchcase(key, pattern) for pattern in remote_settable)


def local_only_changes(
    local: config.Config, cfg: config.Config, *, pushed_rules_path: str | None
) -> list[str]:
    """The dotted keys whose value in ``cfg`` differs from the local file's (``local``) although only
    the local file may set them, sorted. Judged on the validated values, so a push that repeats the
    local value, or a key an ``EDGEGW_*`` override pins, changes nothing; ``rules.path`` pointing at
    the pushed rules file (``pushed_rules_path``) is the pushed rules text, allowed."""
    before, after = _leaves(dataclasses_raw(local)), _leaves(dataclasses_raw(cfg))
    allowed = local.fleet.remote_settable_keys  # the local file's list, never the overlay's
    changed = []
    for key, value in after.items():
        if before.get(key) == value:
            continue
        if key == "rules.path" and pushed_rules_path is not None and value == pushed_rules_path:
            continue
        if is_local_only(key, allowed):
            changed.append(key)
    return sorted(changed)


def bounds_lowered(running: config.OutboxSection, wanted: config.OutboxSection) -> bool:
    """``wanted`` keeps less than ``running``: a lower ``max_bytes``, or a ``max_age_s`` that is lower
    or now set where it was 0 (never)."""
    lower_age = wanted.max_age_s > 0 and (running.max_age_s == 0 or wanted.max_age_s < running.max_age_s)
    return wanted.max_bytes < running.max_bytes or lower_age


def eviction_risks(
    running: config.OutboxSection, wanted: config.OutboxSection, held_bytes: int, oldest_age_s: float | None
) -> list[str]:
    """Why ``wanted`` outbox bounds would evict committed records the outbox holds now (``held_bytes``,
    the oldest ``oldest_age_s`` old), as sentences; empty when they would not. Only a bound lowered
    below the running one is judged: a higher one evicts nothing the running one keeps."""
    risks = []
    if wanted.max_bytes < running.max_bytes:
        needed = held_bytes + max(EVICTION_HEADROOM_MIN_BYTES, held_bytes // 4)
        if wanted.max_bytes < needed:
            risks.append(
                f"outbox.max_bytes {wanted.max_bytes} is below what the outbox holds ({held_bytes} bytes "
                f"committed) plus headroom: at least {needed}"
            )
    if wanted.max_age_s > 0 and (running.max_age_s == 0 or wanted.max_age_s < running.max_age_s):
        needed_s = (oldest_age_s or 0.0) + EVICTION_HEADROOM_S
        if wanted.max_age_s < needed_s:
            risks.append(
                f"outbox.max_age_s {wanted.max_age_s:g} is below the oldest committed record's age "
                f"({oldest_age_s or 0.0:.0f} s) plus headroom: at least {needed_s:.0f}"
            )
    return risks


def dataclasses_raw(cfg: config.Config) -> dict[str, Any]:
    """A validated config as the raw mapping it could have been read from (without ``source``)."""
    doc = dataclasses.asdict(cfg)
    doc.pop("source", None)
    return doc


def local_raw(cfg: config.Config) -> dict[str, Any]:
    """The raw YAML mapping of the local file ``cfg`` was read from (``cfg.source``), or, for a
    config not read from a file (tests, benchmarks), the config itself as a mapping."""
    path = Path(cfg.source)
    raw = textfile.load_yaml(path) if path.is_file() else None  # ConfigError naming the file
    return raw if isinstance(raw, dict) else dataclasses_raw(cfg)


def rejected_reason(exc: CommandRejected | ConfigError) -> str:
    """The short code reported for a refused configuration."""
    return "invalid" if isinstance(exc, ConfigError) else exc.reason
