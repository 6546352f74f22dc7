"""The command allow-list and dispatch: order of checks, params validation, results, rotation by command.

Source: issue 8 (allow-listed commands, answered on cmd-result with a reason) and ARCHITECTURE.md §3.2
(the result goes to ``cmd-result``). Envelopes come from the reference signer ``gateway.fleet.sign``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet.commands import CommandDispatcher, CommandResult, Param, command_name
from gateway.fleet.trust import Trust, fingerprint
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer, public_pem


@pytest.fixture
def calls() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def dispatcher(data_dir: Path, calls: list[tuple[str, dict[str, Any]]]) -> CommandDispatcher:
    d = CommandDispatcher(Trust(data_dir, gateway_id=GATEWAY_ID), clock=lambda: float(NOW_S))

    def flush(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(("flush", params))
        return {"flushing": True}

    async def downlink(params: dict[str, Any]) -> None:
        calls.append(("downlink", params))

    def broken(params: dict[str, Any]) -> None:
        raise ValueError("queue full")

    d.register("flush", flush)
    d.register(
        "downlink",
        downlink,
        (
            Param("dev_eui", str, pattern=r"[0-9A-Fa-f]{16}"),
            Param("fport", int, min_value=1, max_value=223),
            Param("payload_hex", str, pattern=r"([0-9A-Fa-f]{2}){1,242}"),
            Param("confirmed", bool, required=False, default=False),
        ),
    )
    d.register("set_log_level", broken, (Param("level", str, choices=("DEBUG", "INFO")),))
    return d


DL = {"dev_eui": "70B3D57ED0000001", "fport": 2, "payload_hex": "01ff"}


async def test_accepted_command_runs_and_answers(
    dispatcher: CommandDispatcher, signed: Signer, calls: list[Any]
) -> None:
    result = await dispatcher.handle("flush", signed("flush", seq=1))
    assert result == CommandResult("flush", 1, True, None, {"flushing": True})
    assert result.to_dict() == {
        "v": 1,
        "cmd": "flush",
        "seq": 1,
        "ok": True,
        "reason": None,
        "result": {"flushing": True},
    }
    result = await dispatcher.handle("downlink", signed("downlink", DL, seq=2))
    assert result.ok
    assert calls == [("flush", {}), ("downlink", {**DL, "confirmed": False})]
    assert dispatcher.counters["accepted"] == 2


async def test_replay_is_refused_and_not_run_twice(
    dispatcher: CommandDispatcher, signed: Signer, calls: list[Any]
) -> None:
    data = signed("flush", seq=5)
    assert (await dispatcher.handle("flush", data)).ok
    result = await dispatcher.handle("flush", data)
    assert (result.ok, result.reason, result.seq) == (False, "replayed", 5)
    assert len(calls) == 1 and dispatcher.counters["rejected_replayed"] == 1


@pytest.mark.parametrize(
    ("topic_name", "name", "params", "reason"),
    [
        ("restart", "flush", None, "wrong_topic"),  # a signed flush re-published on another topic
        ("shell", "shell", {"cmd": "rm -rf /"}, "unknown_command"),
        ("downlink", "downlink", {**DL, "fport": 0}, "bad_params"),
        ("downlink", "downlink", {**DL, "fport": "2"}, "bad_params"),
        ("downlink", "downlink", {**DL, "confirmed": 1}, "bad_params"),
        ("downlink", "downlink", {"fport": 2, "payload_hex": "01"}, "bad_params"),
        ("downlink", "downlink", {**DL, "extra": 1}, "bad_params"),
        ("set_log_level", "set_log_level", {"level": "TRACE"}, "bad_params"),
    ],
)
async def test_refused_commands_do_not_run_nor_consume_the_seq(
    dispatcher: CommandDispatcher,
    signed: Signer,
    calls: list[Any],
    topic_name: str,
    name: str,
    params: dict[str, Any] | None,
    reason: str,
) -> None:
    result = await dispatcher.handle(topic_name, signed(name, params, seq=9))
    assert (result.ok, result.reason, result.seq, result.cmd) == (False, reason, 9, topic_name)
    assert "error" in result.result
    assert calls == [] and dispatcher.trust.last_seq == 0
    assert dispatcher.counters[f"rejected_{reason}"] == 1


async def test_envelope_rejections_are_answered(dispatcher: CommandDispatcher, signed: Signer) -> None:
    cases = [
        (b"{}", "unsigned"),
        (signed("flush", key=Ed25519PrivateKey.generate()), "bad_signature"),
        (signed("flush", target="gw-other"), "misaddressed"),
        (signed("flush", issued_at=NOW_S - 1000), "expired"),
    ]
    for data, reason in cases:
        result = await dispatcher.handle("flush", data)
        assert (result.ok, result.reason) == (False, reason)


async def test_failing_handler_answers_failed_after_consuming(
    dispatcher: CommandDispatcher, signed: Signer
) -> None:
    result = await dispatcher.handle("set_log_level", signed("set_log_level", {"level": "DEBUG"}, seq=3))
    assert (result.ok, result.reason, result.result) == (False, "failed", {"error": "queue full"})
    assert dispatcher.trust.last_seq == 3  # it was accepted and ran: a replay is refused


async def test_rotation_by_signed_commands(
    dispatcher: CommandDispatcher, signed: Signer, platform_key: Ed25519PrivateKey
) -> None:
    new_key = Ed25519PrivateKey.generate()
    add = signed("add_platform_key", {"public_key_pem": public_pem(new_key)}, seq=1)
    result = await dispatcher.handle("add_platform_key", add)
    assert result.ok and result.result["sha256"] == fingerprint(new_key.public_key())
    # The platform now signs with the new key and retires the old one.
    old_fp = fingerprint(platform_key.public_key())
    retire = signed("retire_platform_key", {"sha256": old_fp}, key=new_key, seq=2)
    assert (await dispatcher.handle("retire_platform_key", retire)).ok
    assert (await dispatcher.handle("flush", signed("flush", seq=3))).reason == "bad_signature"
    assert (await dispatcher.handle("flush", signed("flush", key=new_key, seq=3))).ok
    # The last key cannot go.
    last = signed("retire_platform_key", {"sha256": fingerprint(new_key.public_key())}, key=new_key, seq=4)
    assert (await dispatcher.handle("retire_platform_key", last)).reason == "failed"


def test_registry_rules(dispatcher: CommandDispatcher) -> None:
    assert dispatcher.names == [
        "add_platform_key",
        "downlink",
        "flush",
        "retire_platform_key",
        "set_log_level",
    ]
    with pytest.raises(ValueError, match="already"):
        dispatcher.register("flush", lambda p: None)
    with pytest.raises(ValueError, match="topic level"):
        dispatcher.register("a/b", lambda p: None)
    assert command_name("edgegw/gw-1/cmd/flush") == "flush"
