"""What a gateway reports to the platform, said in one line for a person (``edgegw fleet watch``), pure.

Owns the wording of ``cmd-result`` (a ``downlink`` command's later outcome too), ``config-state``,
``update-state``, ``health`` and ``state`` messages (docs/fleet.md, docs/mqtt.md) for people;
programs read the JSON (``fleet watch --json``). A message of an unknown shape is shown as it
came, cut: a watcher must never stop on one.
"""

from __future__ import annotations

import json
from typing import Any

MAX_RAW_CHARS = 120


def describe(kind: str, doc: Any) -> str:
    """One line for the message ``doc`` received on ``<prefix>/<id>/<kind>``."""
    if isinstance(doc, dict):
        try:
            text = _DESCRIBERS[kind](doc) if kind in _DESCRIBERS else None
        except (KeyError, TypeError, ValueError, AttributeError):
            text = None  # a shape this version does not know: shown raw below
        if text is not None:
            return text
    return _cut(doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":")))


def _cmd_result(doc: dict[str, Any]) -> str:
    head = f"{doc['cmd']} (seq {doc.get('seq')})"
    result = doc.get("result")
    if doc.get("state") is not None:
        return f"{head}: {_downlink_outcome(doc['state'], result if isinstance(result, dict) else {})}"
    if doc.get("ok"):
        return f"{head}: ok {_compact(result)}".rstrip()
    error = result.get("error", "") if isinstance(result, dict) else ""
    return f"{head}: REFUSED {doc.get('reason')}: {error}".rstrip(": ")


_OUTCOME_WORDS = {
    "sent": "sent to {dev}",
    "acknowledged": "acknowledged by {dev}",
    "unacknowledged": "NOT ACKNOWLEDGED by {dev}",
    "expired": "EXPIRED before reaching {dev}",
    "refused": "REFUSED for {dev}",
}


def _downlink_outcome(state: str, result: dict[str, Any]) -> str:
    """The later result of a ``downlink`` command: how its frame ended (docs/fleet.md)."""
    # A ``group_downlink``'s result names its multicast group instead of a device.
    to = result.get("dev_eui") or (f"group {result['group']}" if result.get("group") else "?")
    words = _OUTCOME_WORDS.get(state, state.upper() + " for {dev}").format(dev=to)
    detail = result.get("detail")
    if not detail:
        return words
    return f"{words}: {detail}" if state == "refused" else f"{words} ({detail})"


def _config_state(doc: dict[str, Any]) -> str:
    in_effect = doc.get("in_effect") or "the local file alone"
    text = f"configuration {doc.get('version')}: {doc['status']}"
    if doc.get("code"):
        text += f" ({doc['code']}: {doc.get('reason')})"
    return f"{text}; in effect: {in_effect}"


def _update_state(doc: dict[str, Any]) -> str:
    text = f"agent update {doc['version']}: {doc['status']} (running {doc.get('running')}"
    text += f", previous {doc['previous']})" if doc.get("previous") else ")"
    return f"{text}: {doc['reason']}" if doc.get("reason") else text


def _state(doc: dict[str, Any]) -> str:
    return f"{doc['state']} (agent {doc.get('version')})"


def _health(doc: dict[str, Any]) -> str:
    buffer, uplink = doc["buffer"], doc["uplink"]
    parts = [f"uplink {uplink['state']}", f"{buffer['depth']} waiting"]
    if buffer.get("oldest_age_s"):
        parts.append(f"lag {uplink.get('lag_s', 0):.0f} s")
    lost = sum(buffer.get("evicted", {}).values())
    if lost:
        parts.append(f"{lost} EVICTED")
    agent = doc.get("agent") or {}
    if "config_version" in agent:
        parts.append(f"config {agent['config_version'] or 'local'}")
    fleet = doc.get("fleet") or {}
    refused = sum(v for k, v in fleet.items() if k.startswith("rejected_") and isinstance(v, int))
    if refused:
        parts.append(f"{refused} commands refused")
    host = doc.get("host") or {}
    if host.get("cpu_pct") is not None:
        parts.append(f"cpu {host['cpu_pct']:.0f}%")
    disk = host.get("disk") or {}
    if disk.get("used_pct") is not None:
        parts.append(f"disk {disk['used_pct']:.0f}% used")
    return ", ".join(parts)


def _compact(value: Any) -> str:
    if value in (None, {}, []):
        return ""
    return _cut(json.dumps(value, separators=(",", ":")))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 1] + "…"


_DESCRIBERS = {
    "cmd-result": _cmd_result,
    "config-state": _config_state,
    "update-state": _update_state,
    "state": _state,
    "health": _health,
}
