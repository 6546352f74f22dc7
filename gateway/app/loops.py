"""The loops of the running agent, other than the stages' own (commit, forward, remote config).

Owns the receive loop (radio → de-duplication window → pipeline), the downlink transmissions
(RX1, then RX2; a unicast one not while group commits fail), the class C poll (with the multicast
frames, and where a group downlink's end state goes: ``group_outcomes``), the time-driven rules and the
rules file's hot reload, and what is published or logged periodically (inventory, health extras,
the summary line, the retained ``online`` state). Each is a function of the agent's stages; the
order in which they start and stop belongs to ``gateway.app.run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.clock import SystemClock, iso_utc
from gateway.errors import UplinkError
from gateway.lorawan.downlink import DownlinkRef
from gateway.lorawan.multicast import GROUP_PREFIX, OnGroupOutcome
from gateway.messages import DevEui, TxRequest, TxStatus
from gateway.pipeline import UplinkPipeline, downlink_event
from gateway.rules.actions import Output
from gateway.rules.engine import RuleEngine
from gateway.uplink import envelope

from .agent import Agent
from .commands import CommandOutcomes

log = logging.getLogger(__name__)

RULES_TICK_MAX_S = 30.0
COUNTER_DURABLE_WAIT_S = 5.0
"""How long a unicast frame waits for the group commit of the FCntDown it used, at most."""
COUNTER_DURABLE_POLL_S = 0.01


async def every(interval_s: float, fn: Callable[[], Awaitable[None] | None]) -> None:
    """Call ``fn`` every ``interval_s`` seconds (awaiting it when it is a coroutine function)."""
    while True:
        await asyncio.sleep(interval_s)
        result = fn()
        if result is not None:
            await result


# --- the uplink side -------------------------------------------------------------------------


async def receive(agent: Agent) -> None:
    """Radio → de-duplication window → pipeline; one copy of each uplink, the best heard."""
    radio_receive, dedup, handle = agent.radio.receive, agent.dedup, agent.pipeline.handle
    while True:
        due_s = dedup.next_due_s()
        timeout_s = None if due_s is None else max(0.0, due_s - time.monotonic())
        try:
            frame = await asyncio.wait_for(radio_receive(), timeout_s)
        except TimeoutError:
            frame = None
        if frame is not None and frame.rx.gps_time:  # a GPS-locked concentrator: a time source
            agent.clock.note_gps(frame.rx.gps_time, frame.received_mono_s)
        ready = dedup.add(frame, time.monotonic()) if frame is not None else []
        ready.extend(dedup.due(time.monotonic()))
        for heard in ready:
            await handle(heard)


def spawn_transmit(
    agent: Agent, first: TxRequest | None, second: TxRequest | None, *, group: str | None = None
) -> None:
    """Send a downlink in its own task (the pipeline does not wait for RX1/RX2); ``group``: a
    multicast frame of that group."""
    task = asyncio.get_running_loop().create_task(transmit(agent, first, second, group=group))
    agent.transmissions.add(task)
    task.add_done_callback(agent.transmissions.discard)


async def transmit(
    agent: Agent, first: TxRequest | None, second: TxRequest | None, *, group: str | None = None
) -> None:
    """RX1, then RX2 if RX1 could not be sent (too late, duty cycle, collision...).

    A unicast frame not while group commits fail (a full disk): the downlink counter each frame used is not
    durable then, and after a crash the same FCntDown would go out again under the same keys
    (keystream reuse, and the device refuses it). The device repeats an unacknowledged confirmed
    uplink; a command's downlink goes again at the next opportunity (below).

    Each downlink ends in one ``tail`` event (``gateway.pipeline.downlink_event``) and one count in
    the downlink counters: ``tx_sent``, or ``not_sent.<status>`` of its last window (`edgegw status`).
    A multicast frame (``group``) is counted as ``multicast_sent`` / ``multicast_not_sent.<status>``
    in the same counters, its event names the group; it goes its own way (``_transmit_multicast``).

    A unicast frame goes on the air only once the FCntDown it used is durable (``_counter_durable``:
    a class C frame goes at once, with no RX1 delay for the group commit to run in); else it ends
    ``disk_full``. The verdict goes back to the scheduler (``DownlinkScheduler.transmitted``): a
    command's downlink ends ``sent``, or goes again at the next opportunity (``refused`` when its
    transmissions are spent) — never silently.
    """
    if group is not None:
        request = first or second
        if request is not None:
            await _transmit_multicast(agent, request, group)
        return
    counters = agent.downlinks.counters
    if agent.committer.failing:
        counters["not_sent_disk_full"] += 1
        request = first or second
        if request is not None:
            _downlink_done(agent, request, "disk_full", _window(first, request), "group commits fail")
        return
    request = first or second
    if request is not None and not await _counter_durable(agent, request):
        counters["not_sent_disk_full"] += 1
        _downlink_done(agent, request, "disk_full", _window(first, request), "downlink counter not durable")
        return
    tried: list[str] = []
    last: TxRequest | None = None
    status = ""
    for request in (first, second):
        if request is None:
            continue
        last = request
        result = await agent.radio.transmit(request)
        window = _window(first, request)
        if result.status is TxStatus.SENT:
            counters["tx_sent"] += 1
            _downlink_done(agent, request, "sent", window, "; ".join(tried))
            return
        status = result.status.value
        tried.append(f"{window}: {status}{f' ({result.detail})' if result.detail else ''}")
        log.debug("downlink to %s not sent at %d Hz: %s %s", request.dev_eui, request.freq_hz, result.status,
                  result.detail)  # fmt: skip
    if last is not None:
        counters[f"not_sent.{status}"] += 1
        _downlink_done(agent, last, status, _window(first, last), "; ".join(tried))


async def _transmit_multicast(agent: Agent, request: TxRequest, group: str) -> None:
    """One multicast frame of ``MulticastScheduler.ready()``: its McFCntDown is durable already (the
    scheduler releases a frame only after the commit that moved its counter), so it goes even while a
    later group commit fails. The verdict goes back to the scheduler (``transmitted``): a refused
    frame's downlink goes again as a new frame, or ends ``refused`` — never silently."""
    counters = agent.downlinks.counters
    result = await agent.radio.transmit(request)
    status = result.status.value
    if result.status is TxStatus.SENT:
        counters["multicast_sent"] += 1
        detail = ""
    else:
        counters[f"multicast_not_sent.{status}"] += 1
        detail = f"multicast: {status}{f' ({result.detail})' if result.detail else ''}"
        log.debug("multicast frame of group %s not sent: %s %s", group, status, result.detail)
    _downlink_done(agent, request, status, "multicast", detail, group)  # the frame, then its downlink's end
    groups = agent.pipeline.multicast
    if groups is not None:
        groups.transmitted(request, status, retries=agent.config.lorawan.confirmed_retries)


async def _counter_durable(agent: Agent, request: TxRequest) -> bool:
    """Wait (at most ``COUNTER_DURABLE_WAIT_S``) until the group commit made the device's downlink
    counter durable: after a crash, the same FCntDown must never go out again under the same keys.
    A class A frame usually finds it done (``pipeline._answer`` asked for the commit RX1's delay
    before); False when the commit fails or takes too long."""
    downlinks = agent.downlinks
    if request.dev_eui is None or downlinks.counter_durable(request.dev_eui):
        return True
    agent.committer.notify(0, urgent=True)
    deadline_s = time.monotonic() + COUNTER_DURABLE_WAIT_S
    while not downlinks.counter_durable(request.dev_eui):
        if agent.committer.failing or time.monotonic() >= deadline_s:
            return False
        await asyncio.sleep(COUNTER_DURABLE_POLL_S)
    return True


def _window(first: TxRequest | None, request: TxRequest) -> str:
    if request is not first:
        return "rx2"
    return "class_c" if request.send_at_tmst_us is None and request.send_at_gps_ms is None else "rx1"


def _downlink_done(
    agent: Agent, request: TxRequest, status: str, window: str, detail: str, group: str | None = None
) -> None:
    if group is None:
        # The scheduler learns the verdict: the outcome of a command's downlink, or a retry.
        agent.downlinks.transmitted(request, status, time.monotonic())
    listeners = agent.pipeline.downlink_listeners
    if listeners:
        event = downlink_event(request, status, window, detail, time.time(), group=group)
        for listener in listeners:
            listener(event)


def class_c(agent: Agent) -> None:
    agent.downlinks.tick(time.monotonic())  # expiries and class C ACK timeouts first: a retry goes now
    for request in agent.downlinks.class_c_ready():
        spawn_transmit(agent, request, None)
    multicast(agent)


def multicast(agent: Agent) -> None:
    """The multicast frames whose McFCntDown is durable, each sent once, at once (class C)."""
    groups = agent.pipeline.multicast
    if groups is None:
        return
    for request in groups.ready():
        spawn_transmit(agent, request, None, group=groups.group_of(request))


def group_outcomes(pipeline: UplinkPipeline, commands: CommandOutcomes) -> OnGroupOutcome:
    """Where a multicast group downlink's end state goes (``MulticastScheduler.on_outcome``): a
    platform ``group_downlink``'s on ``cmd-result`` with its seq, a rule's counted as
    ``rules.downlink.<state>`` like a unicast one, every one a ``tail`` event naming the group."""

    def on_outcome(ref: DownlinkRef | None, group: str, state: str, detail: str) -> None:
        if ref is not None and ref.source == "rule":
            pipeline.counters[f"rules.downlink.{state}"] += 1
        if pipeline.downlink_listeners:
            event = group_outcome_event(ref, group, state, detail, time.time())
            for listener in pipeline.downlink_listeners:
                listener(event)
        commands.group(ref, group, state, detail)

    return on_outcome


def group_outcome_event(
    ref: DownlinkRef | None, group: str, state: str, detail: str, at_s: float
) -> dict[str, Any]:
    """``gateway.pipeline.outcome_event`` for a group downlink: ``group`` names it, and ``dev_eui``
    is ``group:<name>`` (how a group is named where a device is expected) for `tail`'s line."""
    return {
        "at_s": at_s,
        "verdict": "downlink",
        "outcome": True,
        "dev_eui": f"{GROUP_PREFIX}{group}",
        "group": group,
        "status": state,
        "detail": detail,
        "ref": None if ref is None else {"source": ref.source, "name": ref.name, "seq": ref.seq},
    }


# --- the rules -------------------------------------------------------------------------------


async def rules_ticks(
    rules: RuleEngine,
    route: Callable[[list[Output]], None],
    commit: Callable[[], None],
    clock: SystemClock | None = None,
) -> None:
    """Time-driven rules: silence watchdogs, lighting schedules, interval aggregates.

    With ``clock`` (the agent's, which also hears GPS times in received frames), lighting gets the
    best time and its trust (``SystemClock.wall_time``: GPS, NTP, holdover or unsynced) and never
    follows its schedule from an untrusted time (docs/rules.md); without, ``time.time()`` is trusted.
    """
    while True:
        now_s = time.time()
        route(rules.tick(now_s, lighting_time=None if clock is None else clock.wall_time()))
        if rules.has_changes:
            commit()  # the changed state commits with the records it produced
        due_s = rules.next_due_s(now_s)
        await asyncio.sleep(
            RULES_TICK_MAX_S if due_s is None else min(RULES_TICK_MAX_S, max(0.5, due_s - now_s))
        )


def reload_rules(
    rules: RuleEngine, route: Callable[[list[Output]], None], path: str | Path, why: str
) -> bool:
    """Load the rules file again; any ConfigError (invalid, unreadable, not UTF-8) keeps the
    running rules, and the engine records it for `edgegw rules`. True when the new rules run."""
    outputs, error = rules.reload(path, time.time())
    route(outputs)
    if error is not None:
        log.error("%s rules refused, the previous rules stay: %s", why, error)
        return False
    return True


def rules_file_watcher(
    rules: RuleEngine, route: Callable[[list[Output]], None], path: str
) -> Callable[[], None]:
    """A check to call periodically: reload the rules when the file's mtime changed."""
    file = Path(path)
    seen = {"mtime": _mtime(file)}

    def check() -> None:
        mtime = _mtime(file)
        if mtime == seen["mtime"]:
            return
        seen["mtime"] = mtime
        if reload_rules(rules, route, file, "new"):
            log.info("rules reloaded from %s", file)

    return check


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# --- observation -----------------------------------------------------------------------------


def health_extra(agent: Agent) -> dict[str, Any]:
    """The agent's sections of the ``health`` message (the uplink adds its own)."""
    summary = agent.summary()
    pushed = agent.remote_config.current if agent.remote_config is not None else None
    return {
        "agent": {
            "version": __version__,
            "uptime_s": summary["uptime_s"],
            # The pushed configuration in effect (trial or last known good); None: the local file alone.
            "config_version": pushed.version if pushed is not None else None,
        },
        # Refusals by reason (rejected_<reason>) of commands, of pushed configurations and of
        # agent updates, as docs/fleet.md promises: a forged or replayed flood shows here.
        "fleet": summary["fleet"],
        "host": agent.host.section() if agent.host is not None else None,
        "radio": agent.radio.health(),
        "pipeline": summary["pipeline"],
        "storage": summary["storage"],
        "salvage": summary["salvage"],
        "clock": {"time_quality": agent.clock.quality(None)},
    }


async def publish_inventory(agent: Agent) -> None:
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
            "dev_status": _dev_status_message(seen.get("dev_status")),
        })  # fmt: skip
    max_bytes = agent.uplink.max_payload_bytes(agent.topics.inventory)  # pages the broker takes
    for page in envelope.inventory(agent.config.gateway.id, iso_utc(now_s), devices, max_bytes=max_bytes):
        try:
            await agent.uplink.publish(agent.topics.inventory, page, qos=1)
        except UplinkError as exc:
            log.debug("inventory not published: %s", exc)
            return


def _dev_status_message(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """The inventory's DevStatusAns view with its time as UTC text, like ``last_seen``."""
    if view is None:
        return None
    return {**{k: v for k, v in view.items() if k != "at_s"}, "at": iso_utc(view["at_s"])}


def log_summary(agent: Agent) -> None:
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


def publish_online(agent: Agent) -> None:
    """The retained ``online`` state, at each connection (the broker's will says ``offline``)."""
    payload = envelope.state(True, __version__, iso_utc(time.time()))
    task = asyncio.get_running_loop().create_task(
        agent.uplink.publish(agent.topics.state, payload, retain=True)
    )
    task.add_done_callback(log_failure("publishing online state"))


def log_failure(what: str) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %s", what, task.exception())

    return done
