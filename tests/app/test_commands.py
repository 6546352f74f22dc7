"""The agent's command allow-list (``gateway.app.commands``) in process: each signed command
reaches the one action it names and nothing else, with a real dispatcher, real trust file and a
real downlink queue; what the allow-list refuses runs nothing and keeps its sequence number.

Envelopes come from the reference signer ``gateway.fleet.sign`` (tests/fleet/conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.app.commands import RESTART_DELAY_S, Actions, build_dispatcher
from gateway.config import LorawanSection
from gateway.fleet.commands import CommandDispatcher, CommandResult
from gateway.fleet.trust import Trust
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import MAX_QUEUE, DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevAddr, DevEui
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer

EUI = DevEui.from_hex("70b3d57ed0000001")
DL = {"dev_eui": str(EUI), "fport": 2, "payload_hex": "01ff"}


class Calls:
    """The actions, recording what they were asked."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        keys = SessionKeys(bytes(16), bytes(16))
        session = Session(EUI, DevAddr(bytes.fromhex("26011001")), "p/m", "abcd0123", keys, fcnt_up=None)
        self.downlinks = DownlinkScheduler(LorawanSection(), SessionTable([session]))

    def actions(self) -> Actions:
        return Actions(
            flush=lambda: self.log.append(("flush", None)),
            downlinks=self.downlinks,
            request_restart=lambda: self.log.append(("restart", None)),
            announce_update=lambda params: self.log.append(("update_agent", params)) or {"announced": True},
            configured_log_level="INFO",
        )


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def dispatcher(data_dir: Path, calls: Calls) -> CommandDispatcher:
    return build_dispatcher(
        Trust(data_dir, gateway_id=GATEWAY_ID), calls.actions(), clock=lambda: float(NOW_S)
    )


def test_the_allow_list_is_exactly_the_documented_commands(dispatcher: CommandDispatcher) -> None:
    # docs/fleet.md: the key rotation commands are built in, the agent adds these five.
    built_in = ["add_platform_key", "retire_platform_key"]
    agent = ["downlink", "flush", "restart", "set_log_level", "update_agent"]
    assert sorted(dispatcher.names) == sorted(built_in + agent)


async def test_flush_asks_for_a_flush_and_nothing_else(
    dispatcher: CommandDispatcher, signed: Signer, calls: Calls
) -> None:
    result = await dispatcher.handle("flush", signed("flush", seq=1))
    assert result == CommandResult("flush", 1, True, None, {"flushing": True})
    assert calls.log == [("flush", None)]


async def test_a_downlink_is_queued_until_the_queue_is_full_then_answered_failed(
    dispatcher: CommandDispatcher, signed: Signer, calls: Calls
) -> None:
    for seq in range(1, MAX_QUEUE + 1):
        result = await dispatcher.handle("downlink", signed("downlink", DL, seq=seq))
        assert result == CommandResult("downlink", seq, True, None, {"queued": seq})
    full = await dispatcher.handle("downlink", signed("downlink", DL, seq=MAX_QUEUE + 1))
    assert (full.ok, full.reason) == (False, "failed")
    assert calls.downlinks.queued(EUI) == MAX_QUEUE and calls.log == []


async def test_bad_parameters_run_nothing_and_do_not_use_the_sequence_number(
    dispatcher: CommandDispatcher, signed: Signer, calls: Calls
) -> None:
    bad = await dispatcher.handle("downlink", signed("downlink", {**DL, "fport": 224}, seq=1))
    assert not bad.ok and calls.downlinks.queued(EUI) == 0
    good = await dispatcher.handle("downlink", signed("downlink", DL, seq=1))  # seq 1 still unused
    assert good.ok and calls.downlinks.queued(EUI) == 1


async def test_restart_answers_first_and_asks_for_the_restart_after(
    dispatcher: CommandDispatcher, signed: Signer, calls: Calls
) -> None:
    result = await dispatcher.handle("restart", signed("restart", seq=1))
    assert result.ok and result.result == {"restarting": True}
    assert calls.log == []  # the answer goes out before the agent stops
    await asyncio.sleep(RESTART_DELAY_S + 0.2)
    assert calls.log == [("restart", None)]


async def test_a_log_level_lasts_its_duration_then_returns_to_the_configured_one(
    dispatcher: CommandDispatcher, signed: Signer
) -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel("INFO")
    try:
        result = await dispatcher.handle(
            "set_log_level", signed("set_log_level", {"level": "DEBUG", "duration_s": 1})
        )
        assert result.ok and root.level == logging.DEBUG
        await asyncio.sleep(1.3)
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)


async def test_update_agent_hands_the_checked_announcement_to_the_updater(
    dispatcher: CommandDispatcher, signed: Signer, calls: Calls
) -> None:
    params = {"version": "9.9.9", "sha256": "ab" * 32, "size_bytes": 10}
    result = await dispatcher.handle("update_agent", signed("update_agent", params, seq=1))
    assert result.ok and calls.log == [("update_agent", params)]
    refused = await dispatcher.handle(
        "update_agent", signed("update_agent", {**params, "size_bytes": 0}, seq=2)
    )
    assert not refused.ok and len(calls.log) == 1
