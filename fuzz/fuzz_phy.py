"""atheris harness: LoRaWAN PHYPayloads (``phy.parse``, MAC commands, join-accepts); only FrameError."""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import mutate, targets

SEEDS = targets.phy_seeds()


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_phy(rest)
        return
    ch = _common.FdpChooser(rest)
    targets.check_phy(mutate.mutate_bytes(ch, mutate.pick(ch, SEEDS)))


if __name__ == "__main__":
    _common.main(test_one_input, map(_common.raw_seed, SEEDS))
