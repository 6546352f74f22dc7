"""Composition root: build every stage from the config, run one task per loop, stop cleanly.

Owns the order in which stages are built and wired, their supervision, the
periodic summary line and the shutdown sequence (stop the radio, commit what
was accepted, wait for in-flight PUBACKs, publish the retained ``offline`` state,
close). It holds no stage logic: each stage gets its collaborators through its
constructor and knows nothing of "the gateway".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.clock import SystemClock, iso_utc
from gateway.codec import ProfileStore, default_profiles_dir
from gateway.config import Config
from gateway.control import SOCKET_NAME
from gateway.control.server import ControlServer
from gateway.db import db_path
from gateway.db.commit import Database, GroupCommitter
from gateway.errors import StorageError
from gateway.inventory import Inventory
from gateway.lorawan.sessions import SessionTable, load_sessions
from gateway.outbox import Outbox
from gateway.pipeline import UplinkPipeline
from gateway.provisioning import registry
from gateway.radio import RadioBackend, open_backend
from gateway.uplink import envelope
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)

SESSION_REFRESH_S = 10.0
"""A device registered with the CLI while the agent runs is served within this delay."""
DRAIN_TIMEOUT_S = 5.0
RATE_SAMPLE_S = 10.0


@dataclass
class Agent:
    """The running stages, kept together only so that they can be started, observed and stopped."""

    config: Config
    database: Database
    profiles: ProfileStore
    sessions: SessionTable
    outbox: Outbox
    committer: GroupCommitter
    radio: RadioBackend
    uplink: MqttUplink
    forwarder: Forwarder
    pipeline: UplinkPipeline
    topics: Topics
    inventory: Inventory
    control: ControlServer | None = None
    clock: SystemClock = field(default_factory=SystemClock)
    started_mono: float = field(default_factory=time.monotonic)
    frame_samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=8))

    def summary(self) -> dict[str, Any]:
        """Counters of every stage, for the periodic log line (and later `edgegw status`)."""
        return {
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "radio": dict(self.radio.counters),
            "pipeline": dict(self.pipeline.counters),
            "outbox": dict(self.outbox.counters),
            "commits": self.committer.commits,
            "uplink": {"connected": self.uplink.connected, **self.uplink.counters},
            "forwarder": dict(self.forwarder.counters),
        }


def build(config: Config) -> Agent:
    """Build every stage from the config (opens the database; starts nothing)."""
    profiles_dir = Path(config.profiles_dir) if config.profiles_dir else default_profiles_dir()
    profiles = ProfileStore.load_dir(profiles_dir)
    database = Database(db_path(config.data_dir))
    sessions = SessionTable(database.run_sync(load_sessions))
    outbox = Outbox(database)
    committer = GroupCommitter(
        database,
        [sessions, outbox],
        interval_s=config.outbox.commit_interval_ms / 1000,
        max_pending=config.outbox.commit_max_records,
    )
    outbox.committer_notify = committer.notify
    topics = Topics(config.mqtt.topic_prefix, config.gateway.id)
    uplink = MqttUplink(
        config.mqtt,
        client_id=config.mqtt_client_id,
        will=(topics.state, envelope.state(False, __version__, iso_utc(time.time()))),
    )
    forwarder = Forwarder(
        outbox,
        uplink,
        topics,
        config.gateway.id,
        batch_max_records=config.outbox.batch_max_records,
        batch_linger_ms=config.outbox.batch_linger_ms,
        max_inflight_batches=config.outbox.max_inflight_batches,
    )
    radio = open_backend(config.radio.url)
    clock = SystemClock()
    pipeline = UplinkPipeline(sessions, profiles, outbox, clock)
    inventory = Inventory()
    pipeline.listeners.append(inventory)
    agent = Agent(
        config,
        database,
        profiles,
        sessions,
        outbox,
        committer,
        radio,
        uplink,
        forwarder,
        pipeline,
        topics,
        inventory,
        clock=clock,
    )
    agent.control = ControlServer(
        config.data_path / SOCKET_NAME,
        {"status": lambda _req: _status(agent), "devices": lambda _req: _devices(agent)},
    )
    control = agent.control
    pipeline.listeners.append(lambda event: control.publish("tail", event))
    return agent


async def run(
    config: Config, stop: asyncio.Event, *, on_ready: Callable[[Agent], None] | None = None
) -> None:
    """Run the agent until ``stop`` is set (SIGTERM/SIGINT in the CLI) or a stage fails."""
    agent = build(config)
    log.info(
        "edgegw %s starting: gateway %s, radio %s, broker %s:%d, %d devices, %d profiles",
        __version__,
        config.gateway.id,
        config.radio.url,
        config.mqtt.host,
        config.mqtt.port,
        len(agent.sessions),
        len(agent.profiles.ids()),
    )
    tasks: dict[str, asyncio.Task[None]] = {}
    failure: BaseException | None = None
    try:
        await agent.radio.start()
        if agent.control is not None:
            await agent.control.start()
        agent.uplink.add_connect_hook(lambda: _publish_online(agent))
        await agent.uplink.start()
        tasks = {
            "radio": asyncio.create_task(_receive_loop(agent), name="radio"),
            "commit": asyncio.create_task(agent.committer.run(), name="commit"),
            "forward": asyncio.create_task(agent.forwarder.run(), name="forward"),
            "sessions": asyncio.create_task(_every(SESSION_REFRESH_S, lambda: _refresh_sessions(agent))),
            "rates": asyncio.create_task(_every(RATE_SAMPLE_S, lambda: _sample_rates(agent))),
        }
        if config.log.stats_interval_s > 0:
            tasks["stats"] = asyncio.create_task(
                _every(config.log.stats_interval_s, lambda: _log_summary(agent))
            )
        if on_ready is not None:
            on_ready(agent)
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks.values(), stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                failure = task.exception()
                log.error("stage %s failed: %r", task.get_name(), failure)
    finally:
        await _shutdown(agent, tasks)
    if failure is not None:
        raise failure


async def _receive_loop(agent: Agent) -> None:
    handle = agent.pipeline.handle
    receive = agent.radio.receive
    while True:
        handle(await receive())


async def _every(interval_s: float, fn: Callable[[], Awaitable[None] | None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        result = fn()
        if result is not None:
            await result


async def _refresh_sessions(agent: Agent) -> None:
    try:
        fresh = await agent.database.run(load_sessions)
    except StorageError as exc:
        log.warning("cannot reload sessions: %s", exc)
        return
    before = len(agent.sessions)
    agent.sessions.merge(fresh)
    if len(agent.sessions) != before:
        log.info("device registry changed: %d sessions (was %d)", len(agent.sessions), before)


def _sample_rates(agent: Agent) -> None:
    agent.frame_samples.append((time.monotonic(), agent.radio.counters.get("frames", 0)))


def _frames_per_min(agent: Agent) -> float:
    now, frames = time.monotonic(), agent.radio.counters.get("frames", 0)
    since_mono, since_frames = agent.frame_samples[0] if agent.frame_samples else (agent.started_mono, 0)
    elapsed_s = now - since_mono
    return round(60.0 * (frames - since_frames) / elapsed_s, 1) if elapsed_s > 0 else 0.0


async def _status(agent: Agent) -> dict[str, Any]:
    """`edgegw status`: one screen of what a technician checks first."""
    stats = await agent.outbox.stats()
    oldest_s = None if stats.oldest_created_mono is None else time.monotonic() - stats.oldest_created_mono
    summary = agent.summary()
    return {
        "version": __version__,
        "gateway_id": agent.config.gateway.id,
        "uptime_s": summary["uptime_s"],
        "radio": {
            "url": agent.config.radio.url,
            "frames_per_min": _frames_per_min(agent),
            "counters": summary["radio"],
        },
        "pipeline": summary["pipeline"],
        "uplink": {
            "broker": f"{agent.config.mqtt.host}:{agent.config.mqtt.port}",
            "connected": agent.uplink.connected,
            "counters": {k: v for k, v in summary["uplink"].items() if k != "connected"},
            "forwarder": summary["forwarder"],
        },
        "outbox": {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "oldest_age_s": oldest_s,
            "commits": summary["commits"],
        },
        "clock": {"time_quality": agent.clock.quality(None)},
        "devices": {"registered": len(agent.sessions), "heard": len(agent.inventory.snapshot())},
    }


async def _devices(agent: Agent) -> dict[str, Any]:
    """`edgegw devices`: the registry joined with what was heard."""
    registered = await agent.database.run(registry.list_devices)
    heard = agent.inventory.snapshot()
    rows = []
    for device in registered:
        row = device.as_json()
        row.update(heard.get(str(device.dev_eui), {"last_seen_s": None, "frames": 0, "errors": 0}))
        rows.append(row)
    return {"devices": rows}


def _log_summary(agent: Agent) -> None:
    s = agent.summary()
    p, f = s["pipeline"], s["forwarder"]
    rejected = {k.removeprefix("rejected."): v for k, v in p.items() if k.startswith("rejected.")}
    log.info(
        "frames in %d, accepted %d, decoded %d, rejected %s; committed %d; batches acked %d (%d records); "
        "uplink %s",
        agent.radio.counters.get("frames", 0),
        p.get("accepted", 0),
        p.get("decoded", 0),
        rejected or "{}",
        s["outbox"].get("committed", 0),
        f.get("batches_acked", 0),
        f.get("records_acked", 0),
        "connected" if s["uplink"]["connected"] else "DISCONNECTED",
    )


def _publish_online(agent: Agent) -> None:
    payload = envelope.state(True, __version__, iso_utc(time.time()))
    task = asyncio.get_running_loop().create_task(
        agent.uplink.publish(agent.topics.state, payload, retain=True)
    )
    task.add_done_callback(_log_failure("publishing online state"))


def _log_failure(what: str) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %s", what, task.exception())

    return done


async def _shutdown(agent: Agent, tasks: dict[str, asyncio.Task[None]]) -> None:
    """Stop taking frames, make what was accepted durable, hand what we can to the broker, close.

    The order is the durability contract: the forwarder is drained (in-flight
    batches get their PUBACK and their rows deleted) before anything is cancelled
    under it, so a clean stop causes no redelivery.
    """
    log.info("stopping")
    if agent.control is not None:
        await agent.control.stop()
    for name in ("radio", "sessions", "stats", "rates"):
        if name in tasks:
            tasks[name].cancel()
    await agent.radio.stop()
    try:
        await agent.committer.flush()
    except StorageError as exc:
        log.error("final commit failed: %s", exc)
    await agent.forwarder.drain(DRAIN_TIMEOUT_S)
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    if agent.uplink.connected:
        try:
            payload = envelope.state(False, __version__, iso_utc(time.time()))
            await asyncio.wait_for(agent.uplink.publish(agent.topics.state, payload, retain=True), 2.0)
        except Exception as exc:
            log.warning("could not publish offline state: %s", exc)
    await agent.uplink.stop()
    agent.database.close()
    _log_summary(agent)
    # One machine-readable line with every counter, for scripts and support.
    log.info("final counters %s", json.dumps(agent.summary(), sort_keys=True))
    log.info("stopped")
