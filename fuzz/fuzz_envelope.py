"""atheris harness: platform command envelopes and the command dispatcher; nothing but CommandRejected.

RAW: the bytes as an envelope (``signed_envelope.parse`` + ``signed_envelope.check``, then ``handle`` on
``cmd/flush``). STRUCTURED: a command payload mutated, then correctly signed with the pinned
test key, through ``CommandDispatcher.handle`` with the agent's allow-list (``gateway.app.commands``);
or a pushed configuration's payload (``desired.from_payload``, ``hash``, ``effective``: only
CommandRejected and ConfigError).
"""

from __future__ import annotations

import json

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from gateway.errors import CommandRejected
    from gateway.fleet import signed_envelope
    from tests.fuzz import mutate, targets

BENCH = targets.CommandBench()
TOPICS = ("flush", "downlink", "set_log_level", "add_platform_key", "retire_platform_key", "nope")


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_envelope(rest)
        if rest[:1] == b"{":
            targets.check_command_bytes(BENCH, "flush", rest)
        return
    ch = _common.FdpChooser(rest)
    if ch.integer(0, 3) == 0:  # a pushed configuration's payload
        raw = mutate.mutate_json(ch, mutate.pick(ch, targets.DESIRED_SEEDS), ("mqtt", "rules", "settings"))
        try:
            env = signed_envelope.parse(targets.json_envelope(raw))
        except CommandRejected:
            return
        targets.check_desired(env.payload)
        return
    seed = mutate.pick(ch, targets.COMMAND_SEEDS)
    payload = mutate.mutate_tree(ch, seed, TOPICS)
    topic = seed["cmd"] if ch.integer(0, 3) else mutate.pick(ch, TOPICS)
    targets.check_signed_command(BENCH, topic, payload)


if __name__ == "__main__":
    seeds = [_common.raw_seed(json.dumps(env).encode()) for env in targets.envelope_seeds()]
    _common.main(test_one_input, seeds)
