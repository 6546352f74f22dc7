"""Configuration pushed by the central platform, bound to the running agent.

Owns the wiring of ``gateway.fleet.remote_config.ConfigApplier`` to the stages: the retained
``config`` topic, the retained ``config-state`` answers, the rules check and the in-place
rules reload, the restart request, and the two narrow views of the outbox the applier judges
with (what it holds, for a lower bound; its delivery counters, for a trial). The life cycle
itself (diff, trial, last known good, revert) belongs to ``gateway.fleet.remote_config``
(docs/fleet.md).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.fleet.remote_config import ConfigApplier, Delivery
from gateway.fleet.trust import Trust
from gateway.rules.model import RuleSet

if TYPE_CHECKING:
    from gateway.app import Agent

log = logging.getLogger(__name__)


def build_config_applier(agent: Agent, trust: Trust) -> ConfigApplier:
    """The applier of this agent, subscribed to ``<prefix>/<id>/config`` (it shares ``trust``
    with the command dispatcher: one sequence for commands and configurations)."""
    topics, uplink = agent.topics, agent.uplink

    def check_rules(text: str) -> None:
        RuleSet.parse(text, file="config.rules")

    outbox = agent.outbox

    async def outbox_usage() -> tuple[int, float | None]:
        stats = await outbox.stats()
        return stats.bytes, stats.oldest_age_s

    def delivery() -> Delivery:
        # Lost to the platform: evicted.<class> (outbox full), expired.<class> (too old) and
        # quarantined (too large for the broker: a pushed mqtt.max_message_bytes) of this run.
        lost = sum(n for key, n in outbox.counters.items() if key.startswith(("evicted.", "expired.")))
        lost += outbox.counters["quarantined"]
        # Waiting: committed rows and accepted records not yet committed (a config that stops the
        # group commit would otherwise look like a gateway with nothing to send).
        waiting = outbox.depth + outbox.waiting_in_memory
        return Delivery(acked=outbox.counters["acked"], waiting=waiting, lost=lost)

    def reload_rules() -> None:
        if agent.rules is not None:
            outputs, error = agent.rules.reload(agent.config.rules.path, time.time())
            agent.pipeline.route(outputs)
            if error is not None:
                log.error("pushed rules refused, the previous rules stay: %s", error)

    applier = ConfigApplier(
        agent.config,
        trust,
        publish_state=lambda data: uplink.publish(topics.config_state, data, retain=True),
        connected=lambda: uplink.connected,
        request_restart=agent.restart_requested.set,
        check_rules=check_rules,
        reload_rules=reload_rules,
        delivery=delivery,
        outbox_usage=outbox_usage,
    )
    uplink.subscribe(topics.config, applier.mqtt_handler())
    uplink.add_connect_hook(applier.on_connect)
    return applier
