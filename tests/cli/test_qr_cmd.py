"""`edgegw qr make | parse`: labels from the registry; scanned codes checked (TR005 lines 210-214)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway import config, db
from gateway.cli.main import main
from gateway.crc import crc16_modbus
from gateway.messages import AesKey, DevEui, JoinEui
from gateway.provisioning import label, qr, registry

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


SVG_NS = "{http://www.w3.org/2000/svg}"


def symbol_matrix(path_d: str) -> list[list[bool]]:
    """The dark modules drawn by one label's path (``M x y h m v m h-m z`` per module), as a matrix."""
    squares = [s for s in path_d.split("M") if s]
    module_mm = float(squares[0].split("h")[1].split("v")[0])
    corners = [tuple(float(v) for v in s.split("h")[0].split()) for s in squares]
    x0, y0 = min(c[0] for c in corners), min(c[1] for c in corners)
    cells = {(round((y - y0) / module_mm), round((x - x0) / module_mm)) for x, y in corners}
    size = max(max(r, c) for r, c in cells) + 1
    return [[(r, c) in cells for c in range(size)] for r in range(size)]


def sheet_labels(svg: Path) -> dict[str, tuple[qr.DeviceQr, list[str]]]:
    """DevEUI → (its code read back from the drawn modules' text, the lines under it), per label."""
    found: dict[str, tuple[qr.DeviceQr, list[str]]] = {}
    for group in ET.fromstring(svg.read_text()).iter(f"{SVG_NS}g"):
        text = group.findtext(f"{SVG_NS}title") or ""
        code = qr.parse(text)  # checksum checked
        path = group.find(f"{SVG_NS}path")
        assert path is not None
        # What a scanner reads: the drawn modules are exactly segno's symbol of this text.
        assert symbol_matrix(path.attrib["d"]) == label.qr_matrix(text)
        assert str(code.dev_eui) not in found
        found[str(code.dev_eui)] = (code, [t.text or "" for t in group.iter(f"{SVG_NS}text")])
    return found


def register(cfg: Path, count: int) -> list[str]:
    data_dir = config.load(str(cfg)).data_dir
    conn = db.connect(db.db_path(data_dir))
    euis = [f"a84041035660e3{n:02x}" for n in range(count)]
    for n, eui in enumerate(euis):
        keys = registry.OtaaKeys(JoinEui.from_hex("70b3d57ed0000001"), AesKey.from_hex(APP))
        registry.add_device(conn, dev_eui=DevEui.from_hex(eui), profile="p", keys=keys, site=f"aix/c{n}")
    conn.close()
    return euis


def test_sheet_of_all_devices_has_one_decodable_code_each(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    euis = register(cfg, 27)
    sheet = tmp_path / "sheet.svg"
    code, out, _ = run(capsys, "--config", str(cfg), "qr", "sheet", "--all", "--out", str(sheet), "--json")
    assert code == 0 and json.loads(out)["files"] == [str(sheet)]
    found = sheet_labels(sheet)
    assert sorted(found) == euis
    code_0, lines_0 = found[euis[0]]
    assert str(code_0.join_eui) == "70b3d57ed0000001" and code_0.checksum_present
    assert lines_0 == [f"DevEUI {euis[0].upper()}", "aix/c0"]
    assert APP not in sheet.read_text().lower()  # no key on a label
    root = ET.fromstring(sheet.read_text())
    assert (root.attrib["width"], root.attrib["height"]) == ("210mm", "297mm")  # A4, prints at size


def test_sheet_from_csv_and_pages(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    euis = register(cfg, 32)
    listing = tmp_path / "devices.csv"
    listing.write_text("# the morning's round\ndev_eui;site\n" + "".join(f"{e};x\n" for e in euis[3:6]))
    sheet = tmp_path / "round.svg"
    code, _, _ = run(capsys, "--config", str(cfg), "qr", "sheet", "--csv", str(listing), "--out", str(sheet))
    assert code == 0 and sorted(sheet_labels(sheet)) == euis[3:6]
    # 32 labels: 30 on the first A4 page, 2 on the second.
    code, out, _ = run(capsys, "--config", str(cfg), "qr", "sheet", "--all", "--out", str(sheet), "--json")
    pages = [Path(f) for f in json.loads(out)["files"]]
    assert code == 0 and [p.name for p in pages] == ["round-1.svg", "round-2.svg"]
    assert [len(sheet_labels(p)) for p in pages] == [30, 2]
    # DevEUIs given on the command line; an unknown one is refused before anything is written.
    code, _, err = run(
        capsys,
        "--config",
        str(cfg),
        "qr",
        "sheet",
        euis[0],
        "0000000000000009",
        "--out",
        str(tmp_path / "x.svg"),
    )
    assert code == 2 and "not registered (1): 0000000000000009" in err and not (tmp_path / "x.svg").exists()
    code, _, err = run(capsys, "--config", str(cfg), "qr", "sheet", "--all", "--out", str(tmp_path / "s.pdf"))
    assert code == 2 and "SVG only" in err
