"""Edge rules (stage ④): alerts, aggregates and lighting schedules that run without the backhaul.

``load_rules(path)`` validates a rules file (loader.py) into a ``RuleSet`` (model.py);
``RuleEngine`` (engine.py) evaluates it per reading (``evaluate``) and per clock tick (``tick``)
and returns output values (actions.py). The package is pure: no clock, no sockets, no database.
"""

from gateway.rules.actions import (
    AggregateRecord,
    DisplayUpdate,
    DownlinkRequest,
    GroupDownlinkRequest,
    Output,
    to_record,
)
from gateway.rules.engine import ReadingFacts, RuleEngine
from gateway.rules.loader import load_rules, parse_rules
from gateway.rules.model import RuleSet

__all__ = [
    "AggregateRecord",
    "DisplayUpdate",
    "DownlinkRequest",
    "GroupDownlinkRequest",
    "Output",
    "ReadingFacts",
    "RuleEngine",
    "RuleSet",
    "load_rules",
    "parse_rules",
    "to_record",
]
