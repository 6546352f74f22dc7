"""Answers of the control socket's queries, from a narrow view of the running agent.

Owns what `edgegw status`, `devices`, `device show`, `rules`, `config show --effective` and `diag`
show (they only read
``StatusSource``) and the two technician actions the socket carries: `flush` (drain the outbox
now) and `requeue_quarantined` (put quarantined records back in the outbox). The socket and its
protocol belong to ``gateway.control.server``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import __version__
from gateway.config import Config, redacted
from gateway.control.server import Query
from gateway.errors import RegistryError
from gateway.history import ReadingHistory
from gateway.messages import DevEui
from gateway.outbox.store import OutboxStats
from gateway.provisioning import registry
from gateway.radio.base import RecentFrame

REQUEUE_WAIT_S = 3.0
"""How long ``requeue_quarantined`` waits for its group commit (under the CLI's 5 s timeout)."""


_NEVER_HEARD: dict[str, Any] = {
    "last_seen_s": None, "frames": 0, "errors": 0, "joins": 0, "retransmissions": 0,
}  # fmt: skip


class OutboxControl(Protocol):
    """``gateway.outbox.Outbox`` as the control socket reads and drives it."""

    @property
    def quarantined_total(self) -> int: ...

    async def stats(self) -> OutboxStats: ...

    async def requeue_quarantined(self) -> int: ...


@dataclass(frozen=True, slots=True)
class StatusSource:
    """What the queries read of the running agent; nothing here changes it."""

    config: Config
    summary: Callable[[], dict[str, Any]]
    """``Agent.summary``: every stage's counters."""
    radio_health: Callable[[], dict[str, Any]]
    frames_per_min: Callable[[], float]
    time_quality: Callable[[], str]
    registered: Callable[[], int]
    """Devices in the registry the agent holds, ABP and OTAA, joined or not."""
    heard: Callable[[], dict[str, dict[str, Any]]]
    """``Inventory.snapshot``: DevEUI hex -> last_seen_s, frames, errors, joins, retransmissions."""
    recent_frames: Callable[[], Iterable[RecentFrame]]
    rules_status: Callable[[float | None], dict[str, Any]] | None
    """``RuleEngine.status``; None when the agent runs without rules."""
    connected: Callable[[], bool]
    run_db: Callable[..., Awaitable[Any]]
    """``Database.run``: a read on the database thread."""
    sessions: Callable[[], int] | None = None
    """Sessions the agent serves: ABP devices and the OTAA devices that joined (None: not shown)."""
    config_state: Callable[[], dict[str, Any] | None] | None = None
    """``ConfigApplier.in_effect``: pushed version, state, overlay keys (None: the local file alone)."""
    uplink_state: Callable[[], dict[str, Any]] | None = None
    """``MqttUplink.status``: read for ``disconnected_since_s`` and ``last_error``."""
    profile_outputs: Callable[[str], list[dict[str, Any]]] | None = None
    """Profile id -> its outputs (name, quantity, unit), in the profile's order, and ``main`` when the
    profile names its main quantity: `device show` charts from them (None or unknown id: [])."""


_NOT_SENT_COUNTERS: dict[str, str] = {
    "not_sent_disk_full": "disk_full", "dropped_too_large": "too_large", "no_timing": "no_timing",
}  # fmt: skip
"""Downlink counters of downlinks given up before the radio, and the reason `status` shows."""


def downlink_failures(counters: dict[str, int]) -> dict[str, int]:
    """Downlinks not sent, by reason: the radio's last refusal (``not_sent.<status>``, counted once
    per downlink after RX1 and RX2) and those given up before the radio (``_NOT_SENT_COUNTERS``)."""
    failed = {k.removeprefix("not_sent."): n for k, n in counters.items() if k.startswith("not_sent.") and n}
    for key, reason in _NOT_SENT_COUNTERS.items():
        if counters.get(key):
            failed[reason] = failed.get(reason, 0) + counters[key]
    return dict(sorted(failed.items()))


class Queries:
    """The control socket's query handlers (``handlers()``) over one ``StatusSource``."""

    def __init__(
        self, source: StatusSource, outbox: OutboxControl, history: ReadingHistory, flush: Callable[[], None]
    ) -> None:
        self._source, self._outbox, self._history, self._flush = source, outbox, history, flush

    def handlers(self) -> dict[str, Query]:
        return {
            "status": lambda _req: self.status(),
            "devices": lambda _req: self.devices(),
            "device": self.device,
            "recent_frames": lambda _req: self.recent_frames(),
            "rules": lambda _req: self.rules(),
            "config": lambda _req: self.config(),
            "flush": lambda _req: self.flush(),
            "requeue_quarantined": lambda _req: self.requeue_quarantined(),
        }

    async def status(self) -> dict[str, Any]:
        """`edgegw status`: one screen of what a technician checks first."""
        src = self._source
        stats = await self._outbox.stats()
        summary = src.summary()
        config = src.config
        health = src.radio_health()
        uplink_state = src.uplink_state() if src.uplink_state is not None else {}
        return {
            "version": __version__,
            "gateway_id": config.gateway.id,
            "uptime_s": summary["uptime_s"],
            "radio": {
                "url": config.radio.url,
                "frames_per_min": src.frames_per_min(),
                "counters": summary["radio"],
                "duty_cycle": health.get("duty_cycle", {}),
                "forwarders": health.get("forwarders"),
            },
            "pipeline": summary["pipeline"],
            "downlinks": {
                "sent": summary.get("downlinks", {}).get("tx_sent", 0),
                "not_sent": downlink_failures(summary.get("downlinks", {})),
            },
            "uplink": {
                "broker": f"{config.mqtt.host}:{config.mqtt.port}",
                "connected": src.connected(),
                "disconnected_since_s": uplink_state.get("disconnected_since_s"),
                "last_error": uplink_state.get("last_error"),
                "last_error_at_s": uplink_state.get("last_error_at_s"),
                "counters": {k: v for k, v in summary["uplink"].items() if k != "connected"},
                "forwarder": summary["forwarder"],
            },
            "outbox": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "oldest_age_s": stats.oldest_age_s,
                "depth_by_class": stats.depth_by_class,
                "evicted": stats.evicted_total,
                "commits": summary["commits"],
            },
            "storage": summary["storage"],
            "salvage": summary.get("salvage"),
            "control": summary.get("control"),
            "clock": {"time_quality": src.time_quality()},
            "devices": {
                "registered": src.registered(),
                **({"sessions": src.sessions()} if src.sessions is not None else {}),
                "heard": len(src.heard()),
            },
            "rules": src.rules_status(None) if src.rules_status is not None else None,
            "config": self._config_state(),
        }

    def _config_state(self) -> dict[str, Any]:
        state = self._source.config_state() if self._source.config_state is not None else None
        if state is None:
            return {"version": None, "state": "local", "overlay_keys": [], "reverted": None}
        return state

    async def config(self) -> dict[str, Any]:
        """`edgegw config show --effective`: the configuration the agent runs (secret removed), and
        the pushed version, state and overlay keys it comes from."""
        return {**self._config_state(), "source": self._source.config.source,
                "config": redacted(self._source.config)}  # fmt: skip

    async def devices(self) -> dict[str, Any]:
        """`edgegw devices`: the registry joined with what was heard."""
        registered = await self._source.run_db(registry.list_devices)
        heard = self._source.heard()
        rows = []
        for device in registered:
            row = device.as_json()
            row.update(heard.get(str(device.dev_eui), _NEVER_HEARD))
            rows.append(row)
        return {"devices": rows}

    async def device(self, request: dict[str, Any]) -> dict[str, Any]:
        """`edgegw device show`: the registry entry, what was heard, and the last readings."""
        try:
            dev_eui = DevEui.from_hex(str(request.get("dev_eui", "")))
        except ValueError as exc:
            raise ValueError(f"dev_eui: {exc}") from exc
        try:
            entry = await self._source.run_db(registry.get_device, dev_eui)
        except RegistryError as exc:
            raise ValueError(str(exc)) from exc
        since_s = request.get("since_s")
        outputs = self._source.profile_outputs
        return {
            "outputs": outputs(entry.profile) if outputs is not None else [],
            "device": entry.as_json(),
            "heard": self._source.heard().get(str(dev_eui)),
            "readings": self._history.readings(str(dev_eui), float(since_s) if since_s is not None else None),
        }

    async def recent_frames(self) -> dict[str, Any]:
        """`edgegw diag`: the radio's ring of raw frames (PHYPayload hex and RF metadata)."""
        return {
            "frames": [
                {
                    "received_at_s": f.received_at_s,
                    "phy_hex": f.phy_payload_hex,
                    "rx": dataclasses.asdict(f.rx),
                }
                for f in self._source.recent_frames()
            ]
        }

    async def rules(self) -> dict[str, Any]:
        """`edgegw rules`: loaded rules, live state (episodes, disabled rules), next lighting change."""
        path = self._source.config.rules.path
        if self._source.rules_status is None:
            return {"enabled": False, "path": path}
        return {"enabled": True, "path": path, **self._source.rules_status(time.time())}

    async def flush(self) -> dict[str, Any]:
        """`edgegw buffer flush`: commit what is pending and drain the backlog now.

        "Now" means: the pending group commit happens at once, the forwarder's wait after a
        failed publish is cut short, and the drain-rate limit is lifted until the backlog is
        empty (``Forwarder.flush``). It cannot reach a broker that is down: then the backlog
        drains without the limit as soon as the connection is back.
        """
        self._flush()
        stats = await self._outbox.stats()
        return {
            "depth": stats.depth,
            "depth_by_class": stats.depth_by_class,
            "connected": self._source.connected(),
            "drain_rate_records_s": self._source.config.mqtt.drain_rate_records_s,
        }

    async def requeue_quarantined(self) -> dict[str, Any]:
        """`edgegw buffer quarantine --requeue`: every quarantined record back into the outbox.

        The move is the next group commit's (``Outbox.requeue_quarantined``, asked at once); the rows
        are then leased like new ones. ``done`` is False when that commit has not happened within
        ``REQUEUE_WAIT_S`` (a full disk): the request stays and a later group carries it out.
        """
        done, moved = True, 0
        try:
            moved = await asyncio.wait_for(self._outbox.requeue_quarantined(), REQUEUE_WAIT_S)
        except TimeoutError:
            done = False
        return {
            "done": done,
            "requeued": moved,
            "quarantined": self._outbox.quarantined_total,
            "connected": self._source.connected(),
        }
