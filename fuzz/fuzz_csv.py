"""atheris harness: the device CSV import (``csv_import.parse_csv``); only ImportFailed."""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import mutate, targets

SEED_TEXT = "\n".join(",".join(row) for row in targets.CSV_SEED) + "\n"


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_csv(rest.decode("utf-8", errors="replace"))
        return
    targets.check_csv(mutate.mutate_csv(_common.FdpChooser(rest), targets.CSV_SEED))


if __name__ == "__main__":
    _common.main(test_one_input, [_common.raw_seed(SEED_TEXT.encode())])
