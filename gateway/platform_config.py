"""Configuration pushed by the central platform, bound to the running agent.

Owns the wiring of ``gateway.fleet.remote_config.ConfigApplier`` to the stages: the retained
``config`` topic, the retained ``config-state`` answers, the rules check and the in-place
rules reload, and the restart request. The life cycle itself (diff, trial, last known good,
revert) belongs to ``gateway.fleet.remote_config`` (docs/fleet.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.fleet.remote_config import ConfigApplier
from gateway.fleet.trust import Trust
from gateway.rules.model import RuleSet

if TYPE_CHECKING:
    from gateway.app import Agent


def build_config_applier(agent: Agent, trust: Trust) -> ConfigApplier:
    """The applier of this agent, subscribed to ``<prefix>/<id>/config`` (it shares ``trust``
    with the command dispatcher: one sequence for commands and configurations)."""
    topics, uplink = agent.topics, agent.uplink

    def check_rules(text: str) -> None:
        RuleSet.parse(text, file="config.rules")

    def reload_rules() -> None:
        if agent.rules is not None:
            outputs, _error = agent.rules.reload(agent.config.rules.path, time.time())
            agent.pipeline.route(outputs)

    applier = ConfigApplier(
        agent.config,
        trust,
        publish_state=lambda data: uplink.publish(topics.config_state, data, retain=True),
        connected=lambda: uplink.connected,
        wait_connected=uplink.wait_connected,
        request_restart=agent.restart_requested.set,
        check_rules=check_rules,
        reload_rules=reload_rules,
    )
    uplink.subscribe(topics.config, applier.mqtt_handler())
    uplink.add_connect_hook(applier.on_connect)
    return applier
