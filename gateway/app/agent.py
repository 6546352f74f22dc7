"""The running stages of one agent, kept together so that they can be started, observed and stopped.

Owns ``Agent`` (what ``gateway.app.build`` made: the loops, the shutdown and the summary read it)
and ``FrameRate`` (frames per minute for `edgegw status`). Only the composition package sees an
``Agent``: what the platform and the control socket drive (``commands``, ``remote_config``,
``updates``, ``queries``) receives narrow callables instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import SystemClock, iso_utc
from gateway.codec import ProfileStore
from gateway.config import Config
from gateway.control.server import ControlServer
from gateway.db.commit import Database, GroupCommitter
from gateway.fleet.commands import CommandDispatcher
from gateway.fleet.remote_config import ConfigApplier
from gateway.hostinfo import HostInfo
from gateway.inventory import Inventory
from gateway.inventory_state import InventoryStateStore
from gateway.lorawan.dedup import Deduplicator
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.join import JoinServer
from gateway.lorawan.sessions import SessionTable
from gateway.outbox import Outbox
from gateway.pipeline import UplinkPipeline
from gateway.provisioning import keystore
from gateway.radio import RadioBackend
from gateway.rules.engine import RuleEngine
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

from .fleet_homes import FleetHomes
from .registry import RegistryWatcher
from .registry_push import RegistryPushApplier
from .updates import AgentUpdater


class FrameRate:
    """Frames per minute over the last samples (one every ``RATE_SAMPLE_S``, eight kept)."""

    def __init__(
        self, frames: Callable[[], int], *, samples: int = 8, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._frames, self._now = frames, now
        self._started = now()
        self._samples: deque[tuple[float, int]] = deque(maxlen=samples)

    def sample(self) -> None:
        self._samples.append((self._now(), self._frames()))

    def per_min(self) -> float:
        since_s, since_frames = self._samples[0] if self._samples else (self._started, 0)
        elapsed_s = self._now() - since_s
        return round(60.0 * (self._frames() - since_frames) / elapsed_s, 1) if elapsed_s > 0 else 0.0


@dataclass
class Agent:
    """The stages of one running agent; built by ``gateway.app.build``, run by ``gateway.app.run``."""

    config: Config
    database: Database
    profiles: ProfileStore
    sessions: SessionTable
    joins: JoinServer
    downlinks: DownlinkScheduler
    dedup: Deduplicator
    outbox: Outbox
    committer: GroupCommitter
    radio: RadioBackend
    uplink: MqttUplink
    forwarder: Forwarder
    pipeline: UplinkPipeline
    topics: Topics
    inventory: Inventory
    rules: RuleEngine | None
    keys: keystore.KeyStore
    registry: RegistryWatcher
    frame_rate: FrameRate
    control: ControlServer | None = None
    commands: CommandDispatcher | None = None
    remote_config: ConfigApplier | None = None
    updater: AgentUpdater | None = None
    fleet_homes: FleetHomes | None = None
    """Issue 21: the coordinator's assignments applied, the FCntDown reserve published."""
    registry_push: RegistryPushApplier | None = None
    """Issue 21: the registry pushed by the platform (``registry``, ``registry-state``, ``seal-key``)."""
    restart_requested: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to stop gracefully and exit with ``EXIT_RESTART`` (a pushed configuration needs a restart)."""
    clock: SystemClock = field(default_factory=SystemClock)
    host: HostInfo | None = None
    heard_store: InventoryStateStore | None = None
    """What was heard of each device, kept across restarts: ``final()`` before the last group commit."""
    started_mono: float = field(default_factory=time.monotonic)
    transmissions: set[asyncio.Task[None]] = field(default_factory=set)

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_mono, 1)

    def storage(self) -> dict[str, Any]:
        """The disk as the outbox meets it: full since when, what waits in memory, what was lost."""
        committer, outbox = self.committer, self.outbox
        full_since_s = committer.full_since_s
        return {
            "disk_full_since": iso_utc(full_since_s) if full_since_s is not None else None,
            "disk_full_groups": committer.disk_full,
            "failed_groups": committer.failures,
            "last_error": committer.last_error,
            "waiting_in_memory": outbox.waiting_in_memory,
            "dropped_uncommitted": {
                k.removeprefix("dropped_uncommitted."): v
                for k, v in outbox.counters.items()
                if k.startswith("dropped_uncommitted.")
            },
            "quarantined": outbox.quarantined_total,
        }

    def summary(self) -> dict[str, Any]:
        """Counters of every stage, for the periodic log line, `edgegw status` and health."""
        return {
            "uptime_s": self.uptime_s(),
            "radio": dict(self.radio.counters),
            "pipeline": dict(self.pipeline.counters),
            "dedup": dict(self.dedup.counters),
            "downlinks": dict(self.downlinks.counters),
            "outbox": dict(self.outbox.counters),
            "commits": self.committer.commits,
            "disk_full": self.committer.disk_full,
            "storage": self.storage(),
            # Rows rescued and lost from a damaged database file (docs/outbox.md); None when sound.
            "salvage": self.database.salvage.as_dict() if self.database.salvage is not None else None,
            "uplink": {"connected": self.uplink.connected, **self.uplink.counters},
            "forwarder": dict(self.forwarder.counters),
            "control": (
                {**self.control.counters, "subscribers": self.control.subscribers}
                if self.control is not None
                else {}
            ),
            "fleet": {
                **(self.commands.counters if self.commands is not None else {}),
                "config": dict(self.remote_config.counters) if self.remote_config is not None else {},
                "update": dict(self.updater.counters) if self.updater is not None else {},
                "registry": (
                    {"applied_version": self.registry_push.applied_version, **self.registry_push.counters}
                    if self.registry_push is not None
                    else {}
                ),
                "homes": (
                    {**self.fleet_homes.counters, **self.fleet_homes.reserve.counters}
                    if self.fleet_homes is not None
                    else {}
                ),
            },
        }
