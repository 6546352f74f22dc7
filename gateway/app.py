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
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__, instance_lock
from gateway.clock import SystemClock, iso_utc
from gateway.codec import ProfileStore, load_profiles
from gateway.config import Config
from gateway.control import SOCKET_NAME, queries
from gateway.control.server import ControlServer
from gateway.db import db_path
from gateway.db.commit import Database, GroupCommitter
from gateway.db.reserve import DiskReserve
from gateway.errors import ConfigError, StorageError, UplinkError
from gateway.fleet.commands import CommandDispatcher
from gateway.fleet.remote_config import EXIT_RESTART, ConfigApplier
from gateway.history import ReadingHistory
from gateway.hostinfo import HostInfo
from gateway.inventory import Inventory
from gateway.lorawan.dedup import Deduplicator
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.join import JoinCommits, JoinServer, load_otaa_devices
from gateway.lorawan.sessions import SessionTable, load_sessions, plain
from gateway.messages import DevEui, TxRequest, TxStatus
from gateway.outbox import Outbox
from gateway.pipeline import DeviceInfo, UplinkPipeline
from gateway.platform_commands import build_dispatcher
from gateway.platform_config import build_config_applier
from gateway.platform_updates import AgentUpdater, build_updater
from gateway.provisioning import keystore, registry
from gateway.radio import RadioBackend, open_backend
from gateway.rules.engine import RuleEngine
from gateway.rules.model import RuleSet
from gateway.rules_state import RulesStateStore
from gateway.uplink import envelope
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.health import publish_health
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)

SESSION_REFRESH_S = 10.0
"""A device registered with the CLI while the agent runs is served within this delay."""
DRAIN_TIMEOUT_S = 5.0
RATE_SAMPLE_S = 10.0
CLASS_C_POLL_S = 1.0
RULES_TICK_MAX_S = 30.0
LEGACY_RULES_STATE_FILE = "rules-state.json"
"""Where agents before the rules_state table saved the rule state (moved into the database once)."""


@dataclass
class Agent:
    """The running stages, kept together only so that they can be started, observed and stopped."""

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
    control: ControlServer | None = None
    commands: CommandDispatcher | None = None
    remote_config: ConfigApplier | None = None
    updater: AgentUpdater | None = None
    restart_requested: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to stop gracefully and exit with ``EXIT_RESTART`` (a pushed configuration needs a restart)."""
    clock: SystemClock = field(default_factory=SystemClock)
    host: HostInfo | None = None
    started_mono: float = field(default_factory=time.monotonic)
    frame_samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=8))
    transmissions: set[asyncio.Task[None]] = field(default_factory=set)
    registry_version: int | None = None
    """``PRAGMA data_version`` when the registry was last read (see ``_refresh_registry``)."""

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
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
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
            },
        }


def build(config: Config) -> Agent:
    """Build every stage from the config (opens the database; starts nothing)."""
    profiles = load_profiles(config.profiles_dir)
    keys = keystore.open_key(config.data_dir)
    decrypt = keys.decrypt_hex
    encrypt = keys.encrypt_hex if keys.enabled else plain
    reserve = DiskReserve(config.data_path, config.outbox.disk_reserve_bytes)
    database = Database(db_path(config.data_dir), reserve=reserve)
    registry_version = database.run_sync(_data_version)  # before reading: a change meanwhile is seen
    if database.quarantined is not None:
        log.error("the database was damaged: moved to %s, started a fresh one", database.quarantined)
    clock = SystemClock()
    sessions = SessionTable(database.run_sync(load_sessions, decrypt))
    joins = JoinServer(config.lorawan, database.run_sync(load_otaa_devices, decrypt))
    join_commits = JoinCommits(sessions, encrypt)  # joins are durable with the group commit, then served
    downlinks = DownlinkScheduler(config.lorawan, sessions, clock_synced=clock.synced)
    outbox = Outbox(
        database, max_bytes=config.outbox.max_bytes, max_age_s=config.outbox.max_age_s,
        memory_queue_records=config.outbox.memory_queue_records,
    )  # fmt: skip
    rules_store = RulesStateStore()
    reserve.ensure()  # before anything else fills the disk; again after a full disk, once there is room
    committer = GroupCommitter(
        database,
        [join_commits, sessions, downlinks, outbox, rules_store],
        interval_s=config.outbox.commit_interval_ms / 1000,
        max_pending=config.outbox.commit_max_records,
        reserve=reserve,
    )
    outbox.committer_notify = committer.notify
    join_commits.committer_notify = committer.notify
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
        batch_max_bytes=config.outbox.batch_max_bytes,
        drain_rate_records_s=config.mqtt.drain_rate_records_s,
        compression=config.mqtt.compression,
    )
    radio = open_backend(config.radio.url)
    rules = _load_rules(config)
    if rules is not None:
        rules_store.attach(database, rules, legacy_file=config.data_path / LEGACY_RULES_STATE_FILE)
    pipeline = UplinkPipeline(
        sessions, profiles, outbox, clock,
        joins=joins, join_commits=join_commits, downlinks=downlinks, rules=rules,
        commit_now=lambda: committer.notify(0, urgent=True),
    )  # fmt: skip
    inventory = Inventory()
    pipeline.listeners.append(inventory)
    agent = Agent(
        config, database, profiles, sessions, joins, downlinks,
        Deduplicator(config.lorawan.dedup_window_ms / 1000), outbox, committer, radio, uplink, forwarder,
        pipeline, topics, inventory, rules, keys, clock=clock, host=HostInfo(config.data_path),
    )  # fmt: skip
    pipeline.send = lambda first, second: _spawn_transmit(agent, first, second)
    history = ReadingHistory()
    pipeline.listeners.append(history)
    control = ControlServer(
        config.data_path / SOCKET_NAME,
        {
            "status": lambda _req: queries.status(agent),
            "devices": lambda _req: queries.devices(agent),
            "device": lambda req: queries.device(agent, history, req),
            "recent_frames": lambda _req: queries.recent_frames(agent),
            "rules": lambda _req: queries.rules(agent),
            "flush": lambda _req: queries.flush(agent),
            "requeue_quarantined": lambda _req: queries.requeue_quarantined(agent),
        },
    )
    agent.control = control
    # Signed platform commands on <prefix>/<id>/cmd/<name>, answers on cmd-result (docs/fleet.md).
    agent.commands = build_dispatcher(agent)
    agent.uplink.subscribe(
        topics.cmd_filter, agent.commands.mqtt_handler(lambda data: uplink.publish(topics.cmd_result, data))
    )
    # Pushed configuration on the retained <prefix>/<id>/config, answers on config-state (docs/fleet.md).
    agent.remote_config = build_config_applier(agent, agent.commands.trust)
    # Agent updates: update_agent announces a package, chunks on update/..., update-state answers.
    agent.updater = build_updater(agent)
    pipeline.listeners.append(lambda event: control.publish("tail", event))
    agent.database.run_sync(_load_device_info, agent)
    agent.registry_version = registry_version
    return agent


async def run(config: Config, stop: asyncio.Event, *, on_ready: Callable[[Agent], None] | None = None) -> int:
    """Run the agent until ``stop`` is set (SIGTERM/SIGINT in the CLI) or a stage fails.

    Returns the exit code: 0, or ``EXIT_RESTART`` (75) when a pushed configuration asked for a
    restart (the agent stopped the same graceful way; systemd starts it again).
    """
    # One agent per data_dir, before anything in it is touched (`edgegw run` took it already).
    instance_lock.acquire(config.data_path)
    agent = build(config)
    log.info(
        "edgegw %s starting: gateway %s, radio %s, broker %s:%d, %d sessions, %d OTAA devices, %d profiles%s",
        __version__, config.gateway.id, config.radio.url, config.mqtt.host, config.mqtt.port,
        len(agent.sessions), len(agent.joins), len(agent.profiles.ids()),
        f", rules from {config.rules.path}" if agent.rules is not None else "",
    )  # fmt: skip
    tasks: dict[str, asyncio.Task[None]] = {}
    failure: BaseException | None = None
    try:
        await agent.radio.start()
        if agent.control is not None:
            await agent.control.start()
        agent.uplink.add_connect_hook(lambda: _publish_online(agent))
        await agent.uplink.start()
        loops: dict[str, Awaitable[None]] = {
            "radio": _receive_loop(agent),
            "commit": agent.committer.run(),
            "forward": agent.forwarder.run(),
            "sessions": _every(SESSION_REFRESH_S, lambda: _refresh_registry(agent)),
            "rates": _every(RATE_SAMPLE_S, lambda: queries.sample_rates(agent)),
            "class_c": _every(CLASS_C_POLL_S, lambda: _class_c(agent)),
        }
        if agent.remote_config is not None:
            loops["remote_config"] = agent.remote_config.run()
        if agent.updater is not None:
            loops["update_check"] = agent.updater.run()
        if config.log.stats_interval_s > 0:
            loops["stats"] = _every(config.log.stats_interval_s, lambda: _log_summary(agent))
        if config.mqtt.inventory_interval_s > 0:
            loops["inventory"] = _every(config.mqtt.inventory_interval_s, lambda: _publish_inventory(agent))
        if config.mqtt.health_interval_s > 0:
            loops["health"] = publish_health(
                agent.uplink, agent.uplink, agent.topics, config.gateway.id, agent.outbox.stats,
                interval_s=config.mqtt.health_interval_s, extra=lambda: _health_extra(agent),
            )  # fmt: skip
        if agent.rules is not None:
            loops["rules"] = _rules_loop(agent)
            loops["rules_reload"] = _every(config.rules.reload_check_s, _rules_reloader(agent))
        tasks = {name: asyncio.create_task(coro, name=name) for name, coro in loops.items()}  # type: ignore[arg-type]
        if on_ready is not None:
            on_ready(agent)
        stopper = asyncio.create_task(stop.wait(), name="stop")
        restarter = asyncio.create_task(agent.restart_requested.wait(), name="restart")
        done, _ = await asyncio.wait(
            [*tasks.values(), stopper, restarter], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        restarter.cancel()
        for task in done:
            if task not in (stopper, restarter) and not task.cancelled() and task.exception() is not None:
                failure = task.exception()
                log.error("stage %s failed: %r", task.get_name(), failure)
    finally:
        await _shutdown(agent, tasks)
    if failure is not None:
        raise failure
    if agent.restart_requested.is_set():
        log.warning("exit code %d: restart me (a pushed configuration to apply or revert)", EXIT_RESTART)
        return EXIT_RESTART
    return 0


# --- the uplink side -------------------------------------------------------------------------


async def _receive_loop(agent: Agent) -> None:
    """Radio → de-duplication window → pipeline; one copy of each uplink, the best heard."""
    receive, dedup, handle = agent.radio.receive, agent.dedup, agent.pipeline.handle
    while True:
        due_s = dedup.next_due_s()
        timeout_s = None if due_s is None else max(0.0, due_s - time.monotonic())
        try:
            frame = await asyncio.wait_for(receive(), timeout_s)
        except TimeoutError:
            frame = None
        ready = dedup.add(frame, time.monotonic()) if frame is not None else []
        ready.extend(dedup.due(time.monotonic()))
        for heard in ready:
            await handle(heard)


def _spawn_transmit(agent: Agent, first: TxRequest | None, second: TxRequest | None) -> None:
    task = asyncio.get_running_loop().create_task(_transmit(agent, first, second))
    agent.transmissions.add(task)
    task.add_done_callback(agent.transmissions.discard)


async def _transmit(agent: Agent, first: TxRequest | None, second: TxRequest | None) -> None:
    """RX1, then RX2 if RX1 could not be sent (too late, duty cycle, collision...).

    Not while group commits fail (a full disk): the downlink counter each frame used is not
    durable then, and after a crash the same FCntDown would go out again under the same keys
    (keystream reuse, and the device refuses it). The device repeats an unacknowledged confirmed
    uplink; a command waits for the platform to send it again.
    """
    if agent.committer.failing:
        agent.downlinks.counters["not_sent_disk_full"] += 1
        return
    for request in (first, second):
        if request is None:
            continue
        result = await agent.radio.transmit(request)
        if result.status is TxStatus.SENT:
            return
        log.debug("downlink to %s not sent at %d Hz: %s %s", request.dev_eui, request.freq_hz, result.status,
                  result.detail)  # fmt: skip


def _class_c(agent: Agent) -> None:
    for request in agent.downlinks.class_c_ready():
        _spawn_transmit(agent, request, None)


# --- the registry and the rules --------------------------------------------------------------


def _load_device_info(conn: Any, agent: Agent) -> None:
    """Sites and numeric installation parameters (for profiles and rules), on the database thread."""
    params = registry.device_params(conn)
    info: dict[str, DeviceInfo] = {}
    for device in registry.list_devices(conn):
        eui = str(device.dev_eui)
        numeric = {k: float(v) for k, v in params.get(eui, {}).items() if isinstance(v, (int, float))}
        info[eui] = DeviceInfo(site=device.site, params=numeric)
        if agent.rules is not None:
            agent.rules.register_device(eui, device.profile, device.site)
    agent.pipeline.devices = info


def _data_version(conn: sqlite3.Connection) -> int:
    # Changes only when another connection (the CLI, an import) committed to the file:
    # the agent's own group commits every 50 ms do not move it.
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


async def _refresh_registry(agent: Agent) -> None:
    """Re-read the registry, only when another process changed the database.

    Re-reading rebuilds every session's cipher contexts and re-registers every device
    with the rules: 10,000 devices every 10 s would be wasted work on a Pi.
    """
    decrypt = agent.keys.decrypt_hex
    try:
        version = await agent.database.run(_data_version)
        if version == agent.registry_version:
            return
        fresh = await agent.database.run(load_sessions, decrypt)
        otaa = await agent.database.run(load_otaa_devices, decrypt)
        await agent.database.run(_load_device_info, agent)
    except (StorageError, sqlite3.Error) as exc:
        log.warning("cannot reload the device registry: %s", exc)
        return
    agent.registry_version = version
    before = len(agent.sessions)
    agent.sessions.merge(fresh)
    agent.joins.merge(otaa)
    if len(agent.sessions) != before:
        log.info("device registry changed: %d sessions (was %d)", len(agent.sessions), before)


def _load_rules(config: Config) -> RuleEngine | None:
    if not config.rules.path:
        return None
    try:
        return RuleEngine(RuleSet.load(config.rules.path))
    except ConfigError as exc:
        # A bad rules file must not take the gateway (and its uplink) down: run without rules,
        # with the refusal recorded for `edgegw rules`; a fixed file is picked up by the reloader.
        log.error("rules not loaded, running without rules: %s", exc)
        engine = RuleEngine()
        engine.reload(config.rules.path, time.time())
        return engine


async def _rules_loop(agent: Agent) -> None:
    """Time-driven rules: silence watchdogs, lighting schedules, interval aggregates."""
    rules = agent.rules
    assert rules is not None
    while True:
        now_s = time.time()
        agent.pipeline.route(rules.tick(now_s))
        if rules.has_changes:
            agent.committer.notify()  # the changed state commits with the records it produced
        due_s = rules.next_due_s(now_s)
        await asyncio.sleep(
            RULES_TICK_MAX_S if due_s is None else min(RULES_TICK_MAX_S, max(0.5, due_s - now_s))
        )


def _rules_reloader(agent: Agent) -> Callable[[], None]:
    path = Path(agent.config.rules.path)
    seen = {"mtime": _mtime(path)}

    def check() -> None:
        mtime = _mtime(path)
        if mtime == seen["mtime"] or agent.rules is None:
            return
        seen["mtime"] = mtime
        # Any ConfigError (invalid, unreadable, not UTF-8) keeps the running rules; the engine
        # records it for `edgegw rules`.
        outputs, error = agent.rules.reload(path, time.time())
        agent.pipeline.route(outputs)
        if error is not None:
            log.error("new rules refused, the previous rules stay: %s", error)
        else:
            log.info("rules reloaded from %s", path)

    return check


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# --- observation -----------------------------------------------------------------------------


async def _every(interval_s: float, fn: Callable[[], Awaitable[None] | None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        result = fn()
        if result is not None:
            await result


def _health_extra(agent: Agent) -> dict[str, Any]:
    summary = agent.summary()
    return {
        "agent": {"version": __version__, "uptime_s": summary["uptime_s"]},
        "host": agent.host.section() if agent.host is not None else None,
        "radio": agent.radio.health(),
        "pipeline": summary["pipeline"],
        "storage": summary["storage"],
        "salvage": summary["salvage"],
        "clock": {"time_quality": agent.clock.quality(None)},
    }


async def _publish_inventory(agent: Agent) -> None:
    """The devices heard since the start (docs/mqtt.md ``inventory``); skipped while offline."""
    if not agent.uplink.connected:
        return
    now_s = time.time()
    devices = []
    for eui, seen in sorted(agent.inventory.snapshot(now_s).items()):
        session = agent.sessions.by_dev_eui(DevEui.from_hex(eui))
        info = agent.pipeline.devices.get(eui)
        devices.append({
            "dev_eui": eui,
            "profile": session.profile if session is not None else None,
            "site": info.site if info is not None else None,
            "last_seen": iso_utc(seen["last_seen_s"]) if seen["last_seen_s"] else None,
            **{k: v for k, v in seen.items() if k != "last_seen_s"},
        })  # fmt: skip
    max_bytes = agent.uplink.max_payload_bytes(agent.topics.inventory)  # pages the broker takes
    for page in envelope.inventory(agent.config.gateway.id, iso_utc(now_s), devices, max_bytes=max_bytes):
        try:
            await agent.uplink.publish(agent.topics.inventory, page, qos=1)
        except UplinkError as exc:
            log.debug("inventory not published: %s", exc)
            return


def _log_summary(agent: Agent) -> None:
    s = agent.summary()
    p, f = s["pipeline"], s["forwarder"]
    rejected = {k.removeprefix("rejected."): v for k, v in p.items() if k.startswith("rejected.")}
    log.info(
        "frames in %d, accepted %d, decoded %d, joins %d, rejected %s; committed %d; "
        "batches acked %d (%d records); uplink %s",
        agent.radio.counters.get("frames", 0), p.get("accepted", 0), p.get("decoded", 0), p.get("joins", 0),
        rejected or "{}", s["outbox"].get("committed", 0), f.get("batches_acked", 0),
        f.get("records_acked", 0), "connected" if s["uplink"]["connected"] else "DISCONNECTED",
    )  # fmt: skip


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


async def _commit_waiting(agent: Agent) -> None:
    """Commit what was accepted, the records that waited in memory for a full disk included (they
    go in growing groups); what the disk still refuses is counted as dropped, never silently lost."""
    for _ in range(64):  # bounded: groups double from 200 records, 64 groups cover any queue
        try:
            await agent.committer.flush()
        except StorageError as exc:
            log.error("final commit failed: %s", exc)
            break
        if not agent.outbox.waiting_in_memory:
            return
    agent.outbox.abandon_waiting()


async def _shutdown(agent: Agent, tasks: dict[str, asyncio.Task[None]]) -> None:
    """Stop taking frames, make what was accepted durable, hand what we can to the broker, close.

    The order is the durability contract: the forwarder is drained (in-flight
    batches get their PUBACK and their rows deleted) before anything is cancelled
    under it, so a clean stop causes no redelivery.
    """
    log.info("stopping")
    if agent.control is not None:
        await agent.control.stop()
    for name in ("radio", "sessions", "stats", "rates", "class_c", "health", "rules", "rules_reload"):
        if name in tasks:
            tasks[name].cancel()
    await agent.radio.stop()
    for task in list(agent.transmissions):
        task.cancel()
    await _commit_waiting(agent)
    await agent.forwarder.drain(DRAIN_TIMEOUT_S)
    try:
        await agent.committer.flush()  # the acks of the drained batches: their rows leave the file now
    except StorageError as exc:
        log.error("final commit of acknowledgements failed (those records will be sent again): %s", exc)
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), *agent.transmissions, return_exceptions=True)
    if agent.rules is not None and agent.rules.has_changes:
        try:
            await agent.committer.flush()  # what the last ticks changed
        except (StorageError, RuntimeError) as exc:
            log.error("rules state not saved at stop: %s", exc)
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
