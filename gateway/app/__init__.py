"""The composition root: the agent built from its configuration, run, observed and stopped.

Only the CLI (``edgegw run``) and ``python -m gateway`` import this package (an import-linter
contract in ``make test``); every stage it wires knows nothing of "the gateway". Its modules,
each with one job:

- ``build``: every stage made and wired, in data-flow order; nothing started.
- ``run``: the tasks, their supervision, the shutdown sequence (the durability contract).
- ``loops``: receive, transmit, class C, rule ticks and reload, periodic publications.
- ``agent``: ``Agent``, the record of the stages, and its counters summary.
- ``registry``: the device registry read on the database thread, applied on the loop.
- ``queries``: the control socket's answers, from a narrow ``StatusSource``.
- ``commands``: the allow-list of signed platform commands, bound to narrow ``Actions``.
- ``remote_config``: what the pushed-configuration applier judges and applies with.
- ``updates``: agent packages: chunks, install, the trial's health check, ``update-state``.
"""

from __future__ import annotations

from .agent import Agent
from .build import build
from .registry import RegistryWatcher
from .run import SESSION_REFRESH_S, run

__all__ = ["SESSION_REFRESH_S", "Agent", "RegistryWatcher", "build", "run"]
