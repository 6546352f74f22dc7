"""atheris harness: Semtech UDP datagrams (``packets.parse``, ``rxpk_to_frame_parts``); only DatagramError."""

from __future__ import annotations

import json

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import mutate, targets


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_udp(rest)
        return
    ch = _common.FdpChooser(rest)
    head, doc = mutate.pick(ch, targets.UDP_SEEDS)
    if doc is None or ch.integer(0, 1):
        targets.check_udp(mutate.mutate_bytes(ch, head + (b"" if doc is None else json.dumps(doc).encode())))
    else:
        targets.check_udp(head + mutate.mutate_json(ch, doc))


if __name__ == "__main__":
    _common.main(test_one_input, map(_common.raw_seed, targets.udp_seed_bytes()))
