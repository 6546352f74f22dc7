"""Shared helpers for the rules tests: build a RuleSet from YAML text and feed readings."""

from __future__ import annotations

import textwrap
from typing import Any

from gateway.messages import Alert
from gateway.rules import ReadingFacts, RuleEngine, RuleSet, parse_rules

DEV = "0011223344556677"
DEV2 = "8899aabbccddeeff"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def ruleset(text: str) -> RuleSet:
    return parse_rules(textwrap.dedent(text), file="test.yaml")


def engine(text: str) -> RuleEngine:
    return RuleEngine(ruleset(text))


def reading(
    at_s: float, dev: str = DEV, profile: str = "test/dev", site: str = "", **data: Any
) -> ReadingFacts:
    return ReadingFacts(dev_eui=dev, profile=profile, at_s=at_s, data=data, site=site)


def alerts(outputs: list[Any]) -> list[Alert]:
    return [o for o in outputs if isinstance(o, Alert)]


def edges(outputs: list[Any]) -> list[str]:
    return [a.state for a in alerts(outputs)]
