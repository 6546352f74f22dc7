"""The allow-list of commands the central platform may send this gateway, bound to narrow callables.

Owns which signed commands exist, their parameters and what each asks of the agent; the
envelope checks (signature, target, sequence, expiry) and the dispatch belong to
``gateway.fleet.commands``. There is no remote shell: each command is a named function with
validated parameters (docs/fleet.md). The handlers see only what they act on: a flush, the
downlink queue, a restart request, the log level, and the updater's announcement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.fleet.commands import CommandDispatcher, Handler, Param
from gateway.fleet.trust import Trust
from gateway.fleet.updates import MAX_PACKAGE_BYTES, VERSION
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
UPDATE_AGENT_PARAMS = (
    Param("version", str, pattern=VERSION.pattern),
    Param("sha256", str, pattern=r"[0-9A-Fa-f]{64}"),
    Param("size_bytes", int, min_value=1, max_value=MAX_PACKAGE_BYTES),
)


class DownlinkQueue(Protocol):
    """``gateway.lorawan.downlink.DownlinkScheduler`` as a command sees it."""

    def enqueue(self, dev_eui: DevEui, fport: int, payload: bytes, *, confirmed: bool = False) -> None: ...

    def queued(self, dev_eui: DevEui) -> int: ...


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


def build_dispatcher(
    trust: Trust, actions: Actions, *, clock: Callable[[], float] = time.time
) -> CommandDispatcher:
    """The dispatcher with this gateway's commands (``trust`` holds the pinned platform keys)."""
    commands = CommandDispatcher(trust, clock=clock)

    def flush(_params: dict[str, Any]) -> dict[str, Any]:
        actions.flush()
        return {"flushing": True}

    def downlink(params: dict[str, Any]) -> dict[str, Any]:
        dev_eui = DevEui.from_hex(params["dev_eui"])
        actions.downlinks.enqueue(
            dev_eui, params["fport"], bytes.fromhex(params["payload_hex"]), confirmed=params["confirmed"]
        )
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
    commands.register(
        "downlink",
        downlink,
        DOWNLINK_PARAMS,
        "queue an application downlink for a device (sent at its next RX window, or at once in class C)",
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
    commands.register(
        "update_agent",
        actions.announce_update,
        UPDATE_AGENT_PARAMS,
        "announce an agent package (its chunks follow on update/<sha256>/<index>/<count>)",
    )
    return commands
