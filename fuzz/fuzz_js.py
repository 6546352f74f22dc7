"""atheris harness: the QuickJS codec runner (``JsCodec.decode``), vendor-style codec; only DecodeError."""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import targets


def test_one_input(data: bytes) -> None:
    if data:
        targets.check_js(data[0], data[1:])


if __name__ == "__main__":
    _common.main(
        test_one_input, [b"\x01\x01\x00\xeb", b"\x02\x02hello", b"\x03\x03\x01\x02", b"\x04\x04\x07"]
    )
