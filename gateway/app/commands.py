"""The allow-list of commands the central platform may send this gateway, bound to narrow callables.

Owns which signed commands exist, their parameters and what each asks of the agent; the
envelope checks (signature, target, sequence, expiry) and the dispatch belong to
``gateway.fleet.commands``. There is no remote shell: each command is a named function with
validated parameters (docs/fleet.md). The handlers see only what they act on: a flush, the
downlink queue, a restart request, the log level, and the updater's announcement.

Also owns the later answer of a ``downlink`` or ``group_downlink`` command (``CommandOutcomes``): the
end state of its frame (sent, acknowledged, unacknowledged, expired, refused), on ``cmd-result`` with
its seq.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.fleet.commands import CommandDispatcher, CommandResult, Handler, Param
from gateway.fleet.trust import Trust
from gateway.fleet.updates import MAX_PACKAGE_BYTES, VERSION
from gateway.lorawan.downlink import DownlinkRef
from gateway.messages import DevEui

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING")
RESTART_DELAY_S = 0.5
"""The restart waits this long, so that the command's result is on its way first."""

DOWNLINK_PARAMS = (
    Param("dev_eui", str, pattern=r"[0-9A-Fa-f]{16}"),
    Param("fport", int, min_value=1, max_value=223),
    Param("payload_hex", str, pattern=r"([0-9A-Fa-f]{2}){1,242}"),
    Param("confirmed", bool, required=False, default=False),
)
GROUP_DOWNLINK_PARAMS = (
    Param("group", str, pattern=r"[a-z0-9][a-z0-9_-]{0,39}"),
    Param("command", str, pattern=r"[A-Za-z0-9_]{1,64}"),
    Param("params", dict, required=False, default={}),
)
UPDATE_AGENT_PARAMS = (
    Param("version", str, pattern=VERSION.pattern),
    Param("sha256", str, pattern=r"[0-9A-Fa-f]{64}"),
    Param("size_bytes", int, min_value=1, max_value=MAX_PACKAGE_BYTES),
)


class DownlinkQueue(Protocol):
    """``gateway.lorawan.downlink.DownlinkScheduler`` as a command sees it."""

    def enqueue(
        self,
        dev_eui: DevEui,
        fport: int,
        payload: bytes,
        *,
        confirmed: bool = False,
        ref: DownlinkRef | None = None,
        now_s: float | None = None,
    ) -> None: ...

    def queued(self, dev_eui: DevEui) -> int: ...


class GroupQueue(Protocol):
    """``gateway.pipeline.UplinkPipeline.queue_group_command`` as a command sees it."""

    def __call__(
        self, group: str, command: str, params: Mapping[str, object], ref: DownlinkRef | None = None
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Actions:
    """What the commands may do to the running agent."""

    flush: Callable[[], None]
    """Commit what is pending and drain the outbox now (no retry wait, no drain-rate limit)."""
    downlinks: DownlinkQueue
    request_restart: Callable[[], None]
    """The same graceful stop as SIGTERM, then exit 75 for the service manager."""
    announce_update: Handler
    """``gateway.app.updates.AgentUpdater.announce``."""
    configured_log_level: str
    """The level the log returns to after a ``set_log_level`` expires."""
    group_downlink: GroupQueue | None = None
    """Encode a command with a multicast group's members' profile and queue it as one frame (``ref``:
    told its end state); returns the group's queue length (``UplinkPipeline.queue_group_command``).
    None: no multicast."""


def build_dispatcher(
    trust: Trust, actions: Actions, *, clock: Callable[[], float] = time.time
) -> CommandDispatcher:
    """The dispatcher with this gateway's commands (``trust`` holds the pinned platform keys)."""
    commands = CommandDispatcher(trust, clock=clock)

    def flush(_params: dict[str, Any]) -> dict[str, Any]:
        actions.flush()
        return {"flushing": True}

    def downlink(params: dict[str, Any], seq: int) -> dict[str, Any]:
        dev_eui = DevEui.from_hex(params["dev_eui"])
        actions.downlinks.enqueue(
            dev_eui, params["fport"], bytes.fromhex(params["payload_hex"]), confirmed=params["confirmed"],
            ref=DownlinkRef("platform", "downlink", seq), now_s=time.monotonic(),
        )  # fmt: skip
        return {"queued": actions.downlinks.queued(dev_eui)}

    def set_log_level(params: dict[str, Any]) -> dict[str, Any]:
        root = logging.getLogger()
        configured = actions.configured_log_level
        root.setLevel(params["level"])
        # For a while only: a forgotten DEBUG must not fill a gateway's SD card.
        asyncio.get_running_loop().call_later(params["duration_s"], root.setLevel, configured)
        return {"level": params["level"], "until_s": params["duration_s"]}

    def restart(_params: dict[str, Any]) -> dict[str, Any]:
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, actions.request_restart)
        return {"restarting": True}

    commands.register("flush", flush, (), "drain the outbox now (no retry wait, no drain-rate limit)")
    commands.register(
        "restart", restart, (), "stop gracefully and start again (exit 75 for the service manager)"
    )
    commands.register_with_seq(
        "downlink",
        downlink,
        DOWNLINK_PARAMS,
        "queue an application downlink for a device (sent at its next RX window, or at once in class C); "
        "its end state follows on cmd-result with the same seq",
    )
    commands.register(
        "set_log_level",
        set_log_level,
        (
            Param("level", str, choices=LOG_LEVELS),
            Param("duration_s", float, required=False, default=600.0, min_value=1, max_value=86400),
        ),
        "change the agent's log level for a while",
    )
    _register_group_downlink(commands, actions)
    commands.register(
        "update_agent",
        actions.announce_update,
        UPDATE_AGENT_PARAMS,
        "announce an agent package (its chunks follow on update/<sha256>/<index>/<count>)",
    )
    return commands


def _register_group_downlink(commands: CommandDispatcher, actions: Actions) -> None:
    """``group_downlink``: one multicast frame for every member of a class C group (docs/lorawan.md)."""
    queue = actions.group_downlink
    if queue is None:
        return

    def group_downlink(params: dict[str, Any], seq: int) -> dict[str, Any]:
        ref = DownlinkRef("platform", "group_downlink", seq)
        try:
            queued = queue(params["group"], params["command"], params["params"], ref)
        except KeyError as exc:  # the members' profile is not loaded on this gateway
            raise ValueError(f"group {params['group']}: unknown profile {exc}") from None
        return {"group": params["group"], "queued": queued}

    commands.register_with_seq(
        "group_downlink",
        group_downlink,
        GROUP_DOWNLINK_PARAMS,
        "send a command once to every member of a class C multicast group, encoded with their profile; "
        "its end state follows on cmd-result with the same seq",
    )


OK_STATES = frozenset({"sent", "acknowledged"})
"""Downlink outcomes that did what the platform asked."""
MAX_UNPUBLISHED = 256
"""Outcomes kept while the broker is unreachable (the oldest dropped beyond), published at reconnection."""


class CommandOutcomes:
    """Publishes the end state of each platform ``downlink`` and ``group_downlink`` command on
    ``cmd-result``: a second result with the command's seq, ``state`` and ``ok`` (true for
    ``sent``/``acknowledged``; else ``reason`` is the state), the first being the ``{"queued": n}``
    answer (docs/fleet.md). Its ``result`` names the device (``dev_eui``) or the group (``group``).

    Called as ``DownlinkScheduler.on_outcome``, ``group`` as ``MulticastScheduler.on_outcome``
    (others' downlinks are ignored); ``on_connect`` for
    ``MqttUplink.add_connect_hook``: the outcomes decided while the broker was away follow then.
    Not durable: a restart forgets the outcomes not yet published (and the queue they were in).
    """

    def __init__(self, publish: Callable[[bytes], Awaitable[None]]) -> None:
        self._publish = publish
        self._unpublished: deque[bytes] = deque(maxlen=MAX_UNPUBLISHED)
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, ref: DownlinkRef | None, dev_eui: DevEui, state: str, detail: str) -> None:
        self._outcome(ref, {"dev_eui": str(dev_eui)}, state, detail)

    def group(self, ref: DownlinkRef | None, group: str, state: str, detail: str) -> None:
        """The end state of a multicast group downlink (``gateway.lorawan.multicast.OnGroupOutcome``)."""
        self._outcome(ref, {"group": group}, state, detail)

    def _outcome(self, ref: DownlinkRef | None, to: dict[str, str], state: str, detail: str) -> None:
        if ref is None or ref.source != "platform":
            return
        ok = state in OK_STATES
        answer = {**to, "state": state, "detail": detail}
        result = CommandResult(ref.name, ref.seq, ok, None if ok else state, answer, state=state)
        who = next(iter(to.values()))
        log.info("platform command %s (seq %s) to %s: %s (%s)", ref.name, ref.seq, who, state, detail)
        self._spawn(result.to_bytes())

    def on_connect(self) -> None:
        while self._unpublished:
            self._spawn(self._unpublished.popleft())

    def _spawn(self, data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._send(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, data: bytes) -> None:
        try:
            await self._publish(data)
        except GatewayError as exc:  # not connected, refused: kept for the next connection
            log.debug("downlink outcome not published yet: %s", exc)
            self._unpublished.append(data)
