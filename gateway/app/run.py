"""Running the agent: start the stages, one task per loop, supervise them, stop cleanly.

Owns the tasks of a running agent (docs/architecture.md "Tasks"), their supervision (the first
that fails stops the agent) and the shutdown sequence, which is the durability contract: stop
the radio, commit what was accepted, wait for in-flight PUBACKs, publish the retained
``offline`` state, close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from gateway import __version__, instance_lock
from gateway.clock import iso_utc
from gateway.config import Config
from gateway.errors import StorageError
from gateway.fleet.remote_config import EXIT_RESTART
from gateway.uplink import envelope
from gateway.uplink.health import publish_health

from . import loops
from .agent import Agent
from .build import build

log = logging.getLogger(__name__)

SESSION_REFRESH_S = 10.0
"""A device registered with the CLI while the agent runs is served within this delay."""
DRAIN_TIMEOUT_S = 5.0
RATE_SAMPLE_S = 10.0
CLASS_C_POLL_S = 1.0
FINAL_COMMIT_GROUPS = 64
"""Groups double from 200 records: 64 groups cover any memory queue (``_commit_waiting``)."""
STOPPED_FIRST = ("radio", "sessions", "stats", "rates", "class_c", "health", "rules", "rules_reload")
"""Tasks cancelled before the final commit: nothing new is taken in while it runs."""


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
        agent.uplink.add_connect_hook(lambda: loops.publish_online(agent))
        await agent.uplink.start()
        tasks = {
            name: asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
            for name, coro in _loops(agent).items()
        }
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


def _loops(agent: Agent) -> dict[str, Awaitable[None]]:
    """The agent's tasks by name (docs/architecture.md); the optional ones as configured."""
    config = agent.config
    tasks: dict[str, Awaitable[None]] = {
        "radio": loops.receive(agent),
        "commit": agent.committer.run(),
        "forward": agent.forwarder.run(),
        "sessions": loops.every(SESSION_REFRESH_S, agent.registry.refresh),
        "rates": loops.every(RATE_SAMPLE_S, agent.frame_rate.sample),
        "class_c": loops.every(CLASS_C_POLL_S, lambda: loops.class_c(agent)),
    }
    if agent.remote_config is not None:
        tasks["remote_config"] = agent.remote_config.run()
    if agent.updater is not None:
        tasks["update_check"] = agent.updater.run()
    if agent.fleet_homes is not None:
        tasks["fcnt_reserve"] = agent.fleet_homes.publish_reserves()
    if config.log.stats_interval_s > 0:
        tasks["stats"] = loops.every(config.log.stats_interval_s, lambda: loops.log_summary(agent))
    if config.mqtt.inventory_interval_s > 0:
        tasks["inventory"] = loops.every(
            config.mqtt.inventory_interval_s, lambda: loops.publish_inventory(agent)
        )
    if config.mqtt.health_interval_s > 0:
        tasks["health"] = publish_health(
            agent.uplink, agent.uplink, agent.topics, config.gateway.id, agent.outbox.stats,
            interval_s=config.mqtt.health_interval_s, extra=lambda: loops.health_extra(agent),
        )  # fmt: skip
    rules = agent.rules
    if rules is not None:
        route = agent.pipeline.route
        tasks["rules"] = loops.rules_ticks(rules, route, agent.committer.notify, agent.clock)
        tasks["rules_reload"] = loops.every(
            config.rules.reload_check_s, loops.rules_file_watcher(rules, route, config.rules.path)
        )
    return tasks


async def _commit_waiting(agent: Agent) -> None:
    """Commit what was accepted, the records that waited in memory for a full disk included (they
    go in growing groups); what the disk still refuses is counted as dropped, never silently lost."""
    for _ in range(FINAL_COMMIT_GROUPS):
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
    for name in STOPPED_FIRST:
        if name in tasks:
            tasks[name].cancel()
    await agent.radio.stop()
    for task in list(agent.transmissions):
        task.cancel()
    if agent.heard_store is not None:
        agent.heard_store.final()  # what was heard in the last seconds goes with the final group
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
    agent.clock.save_state()  # the last trusted time: the next agent of this boot holds over from it
    loops.log_summary(agent)
    # One machine-readable line with every counter, for scripts and support.
    log.info("final counters %s", json.dumps(agent.summary(), sort_keys=True))
    log.info("stopped")
