"""The allow-list of commands the central platform may send this gateway, bound to the stages.

Owns which signed commands exist and what each does to the running agent; the envelope
checks (signature, target, sequence, expiry) belong to ``gateway.fleet``. There is no
remote shell: each command is a named function with validated parameters (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gateway.fleet.commands import CommandDispatcher, Param
from gateway.fleet.trust import Trust
from gateway.messages import DevEui

if TYPE_CHECKING:
    from gateway.app import Agent

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING")


def build_dispatcher(agent: Agent) -> CommandDispatcher:
    """The dispatcher with this gateway's commands; platform keys are read from the data dir."""
    config = agent.config
    commands = CommandDispatcher(Trust(config.data_path, gateway_id=config.gateway.id))

    def flush(_params: dict[str, Any]) -> dict[str, Any]:
        agent.committer.notify(0, urgent=True)
        agent.forwarder.flush()
        return {"flushing": True}

    def downlink(params: dict[str, Any]) -> dict[str, Any]:
        dev_eui = DevEui.from_hex(params["dev_eui"])
        agent.downlinks.enqueue(
            dev_eui, params["fport"], bytes.fromhex(params["payload_hex"]), confirmed=params["confirmed"]
        )
        return {"queued": agent.downlinks.queued(dev_eui)}

    def set_log_level(params: dict[str, Any]) -> dict[str, Any]:
        root = logging.getLogger()
        configured = config.log.level if config.log.level != "TRACE" else "DEBUG"
        root.setLevel(params["level"])
        # For a while only: a forgotten DEBUG must not fill a gateway's SD card.
        asyncio.get_running_loop().call_later(params["duration_s"], root.setLevel, configured)
        return {"level": params["level"], "until_s": params["duration_s"]}

    def restart(_params: dict[str, Any]) -> dict[str, Any]:
        # After this answer is on its way: the same graceful stop as SIGTERM, exit 75, systemd starts it.
        asyncio.get_running_loop().call_later(0.5, agent.restart_requested.set)
        return {"restarting": True}

    commands.register("flush", flush, (), "drain the outbox now (no retry wait, no drain-rate limit)")
    commands.register(
        "restart", restart, (), "stop gracefully and start again (exit 75 for the service manager)"
    )
    commands.register(
        "downlink",
        downlink,
        (
            Param("dev_eui", str, pattern=r"[0-9A-Fa-f]{16}"),
            Param("fport", int, min_value=1, max_value=223),
            Param("payload_hex", str, pattern=r"([0-9A-Fa-f]{2}){1,242}"),
            Param("confirmed", bool, required=False, default=False),
        ),
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
    return commands
