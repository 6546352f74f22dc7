"""`edgegw qr make | parse`: labels from the registry; scanned codes checked (TR005 lines 210-214)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.crc import crc16_modbus
from gateway.provisioning import qr

APP = "000102030405060708090a0b0c0d0e0f"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("EDGEGW_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "edgegw.yaml"
    path.write_text(f"gateway: {{id: gw-test-1}}\nmqtt: {{tls: false}}\ndata_dir: {tmp_path / 'data'}\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse(capsys: pytest.CaptureFixture[str]) -> None:
    text = "LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42:SSERIAL"  # lorawan-stack TR005 test vector
    code, out, _ = run(capsys, "qr", "parse", text, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dev_eui"] == "4242ffffffffffff" and doc["vendor_id"] == "42FF"
    assert doc["serial_number"] == "SERIAL" and doc["checksum"] == "absent"
    code, out, _ = run(capsys, "qr", "parse", text)
    assert code == 0 and "4242ffffffffffff" in out and "SERIAL" in out


def test_parse_bad_checksum_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    body = "LW:D0:42FFFFFFFFFFFFFF:4242FFFFFFFFFFFF:42FFFF42"
    good = crc16_modbus(body.encode())
    code, out, _ = run(capsys, "qr", "parse", f"{body}:C{good:04X}", "--json")
    assert code == 0 and json.loads(out)["checksum"] == "ok"
    code, out, err = run(capsys, "qr", "parse", f"{body}:C{good ^ 0x10:04X}", "--json")
    assert code == 2 and out == "" and f"its content gives C{good:04X}" in err
    code, _, err = run(capsys, "qr", "parse", "not a code")
    assert code == 2 and "not a LoRa Alliance TR005 device code" in err


def test_make_label_png_svg_and_json(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(
        capsys,
        "--config",
        str(cfg),
        "device",
        "add",
        "--dev-eui",
        "a84041035660e3aa",
        "--profile",
        "milesight/em310-udl",
        "--otaa",
        "--join-eui",
        "70b3d57ed0000001",
        "--appkey",
        APP,
        "--site",
        "aix/a7",
    )
    assert code == 0
    png, svg = tmp_path / "l.png", tmp_path / "l.svg"
    code, out, _ = run(capsys, "--config", str(cfg), "qr", "make", "a84041035660e3aa", "--png", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.splitlines()[:3] == [
        qr.parse(out.splitlines()[0]).to_text(),
        "DevEUI A84041035660E3AA",
        "JoinEUI 70B3D57ED0000001",
    ]
    assert APP.upper() not in out and APP not in out  # no key ever goes on a label
    code, out, _ = run(
        capsys, "--config", str(cfg), "qr", "make", "a84041035660e3aa", "--svg", str(svg), "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["file"] == str(svg) and doc["checksum"] == "ok"
    assert qr.parse(doc["qr"]).checksum_present and doc["lines"][2] == "aix/a7"
    assert ET.fromstring(svg.read_text()).find("{http://www.w3.org/2000/svg}title") is not None
    code, _, err = run(capsys, "--config", str(cfg), "qr", "make", "0000000000000009")
    assert code == 2 and "not registered" in err
