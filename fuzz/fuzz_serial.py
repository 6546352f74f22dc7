"""atheris harness: the RAK RUI3 serial modem line parser (``LineParser.feed``); it must never raise.

Input: mode byte, one byte per chunk cut (up to 3), then the byte stream (RAW), or decisions
that concatenate and mutate real modem lines (STRUCTURED).
"""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import mutate, targets


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_serial(rest[3:], list(rest[:3]))
        return
    ch = _common.FdpChooser(rest)
    stream = b"".join(mutate.pick(ch, targets.SERIAL_SEEDS) for _ in range(ch.integer(1, 4)))
    if ch.integer(0, 15) == 0:
        stream += b"A" * ch.integer(500, 1500)
    targets.check_serial(
        mutate.mutate_bytes(ch, stream), [ch.integer(0, 2000) for _ in range(ch.integer(0, 4))]
    )


if __name__ == "__main__":
    _common.main(test_one_input, [_common.raw_seed(b"\x05\x10\x40" + seed) for seed in targets.SERIAL_SEEDS])
