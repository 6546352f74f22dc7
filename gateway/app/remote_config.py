"""Configuration pushed by the central platform, bound to narrow views of the running agent.

Owns what ``gateway.fleet.remote_config.ConfigApplier`` is given to judge and apply a pushed
configuration: the rules check, the two views of the outbox it judges with (what the outbox holds,
for a lower bound; its delivery counters, for a trial) and the wiring of the retained topics
(``config`` in, ``config-state`` out). The life cycle itself (diff, trial, last known good, revert)
belongs to ``gateway.fleet.remote_config`` (docs/fleet.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from gateway.config import Config
from gateway.fleet.remote_config import ConfigApplier, Delivery
from gateway.fleet.trust import Trust
from gateway.outbox.store import OutboxStats
from gateway.rules.loader import parse_rules


class OutboxView(Protocol):
    """``gateway.outbox.Outbox`` as the applier reads it."""

    @property
    def counters(self) -> Mapping[str, int]: ...

    @property
    def depth(self) -> int: ...

    @property
    def waiting_in_memory(self) -> int: ...

    async def stats(self) -> OutboxStats: ...


def check_rules(text: str) -> None:
    """A pushed rules file must parse before it is applied (ConfigError otherwise)."""
    parse_rules(text, file="config.rules")


def delivery(outbox: OutboxView) -> Delivery:
    """What the outbox delivered, lost and still holds in this run (a trial's verdict compares two)."""
    counters = outbox.counters
    # Lost to the platform: evicted.<class> (outbox full), expired.<class> (too old) and
    # quarantined (too large for the broker: a pushed mqtt.max_message_bytes) of this run.
    lost = sum(n for key, n in counters.items() if key.startswith(("evicted.", "expired.")))
    lost += counters.get("quarantined", 0)
    # Waiting: committed rows and accepted records not yet committed (a config that stops the
    # group commit would otherwise look like a gateway with nothing to send).
    waiting = outbox.depth + outbox.waiting_in_memory
    return Delivery(acked=counters.get("acked", 0), waiting=waiting, lost=lost)


def build_config_applier(
    running: Config,
    trust: Trust,
    outbox: OutboxView,
    *,
    publish_state: Callable[[bytes], Awaitable[None]],
    connected: Callable[[], bool],
    request_restart: Callable[[], None],
    reload_rules: Callable[[], None],
) -> ConfigApplier:
    """The applier of this agent (``trust`` is the command dispatcher's: one sequence for commands
    and configurations); the caller subscribes ``applier.mqtt_handler()`` to the ``config`` topic."""

    async def outbox_usage() -> tuple[int, float | None]:
        stats = await outbox.stats()
        return stats.bytes, stats.oldest_age_s

    return ConfigApplier(
        running,
        trust,
        publish_state=publish_state,
        connected=connected,
        request_restart=request_restart,
        check_rules=check_rules,
        reload_rules=reload_rules,
        delivery=lambda: delivery(outbox),
        outbox_usage=outbox_usage,
    )
