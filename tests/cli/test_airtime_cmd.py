"""``edgegw airtime`` (ARCHITECTURE.md §3.1): one JSON document, exit 2 on bad input.

Expected values: TheThingsNetwork/lorawan-stack pkg/toa/toa_test.go and avbentem/airtime-calculator
src/lora/Airtime.test.ts (see tests/radio/test_airtime.py for the full table and commits).
"""

from __future__ import annotations

import json

import pytest

from gateway.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["airtime", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected_ms"),
    [
        (["--sf", "7", "--payload-bytes", "10"], 41.216),  # TTS
        (["--sf", "12", "--payload-bytes", "10"], 991.232),  # TTS (LDRO auto → on)
        (["--sf", "7", "--bw-khz", "250", "--payload-bytes", "14"], 23.168),  # AVB
        (["--sf", "7", "--cr", "4/8", "--payload-bytes", "16"], 69.888),  # AVB
        (["--sf", "11", "--payload-bytes", "14", "--ldro", "off"], 577.536),
        (["--sf", "7", "--payload-bytes", "17", "--no-crc"], 46.336),
        (
            ["--sf", "12", "--payload-bytes", "13", "--implicit-header", "--ldro", "off"],
            18 * 32.768 + 12.25 * 32.768,
        ),
        (["--sf", "9", "--payload-bytes", "20", "--preamble", "16"], None),
    ],
)
def test_json_output(capsys: pytest.CaptureFixture[str], argv: list[str], expected_ms: float | None) -> None:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == ["airtime_ms"]
    if expected_ms is not None:
        assert doc["airtime_ms"] == pytest.approx(expected_ms, abs=0.001)
    else:
        code, out8, _ = run(capsys, "--sf", "9", "--payload-bytes", "20", "--json")
        assert doc["airtime_ms"] == pytest.approx(json.loads(out8)["airtime_ms"] + 8 * 4.096, abs=0.002)


def test_human_output_names_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--sf", "12", "--payload-bytes", "13")
    assert code == 0
    assert out.startswith("1155.072 ms") and "LDRO on" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--sf", "4", "--payload-bytes", "10"],
        ["--sf", "7", "--payload-bytes", "300"],
        ["--sf", "7", "--payload-bytes", "10", "--cr", "5/4"],
        ["--sf", "7", "--payload-bytes", "10", "--bw-khz", "0"],
    ],
)
def test_bad_input_exits_2_with_a_reason(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2
    assert out == ""
    assert err.startswith("edgegw: ") and err.count("\n") == 1


def test_missing_required_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["airtime", "--sf", "7"])
    assert info.value.code == 2
