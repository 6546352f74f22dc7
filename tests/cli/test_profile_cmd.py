"""`edgegw profile list | show | test | import-ttn`, `edgegw encode` and `edgegw decode` with params.

Vectors: the shipped profiles' own examples (sources in each file under device_profiles/);
the Decentlab downlink bytes from TTN lorawan-devices vendor/decentlab/dl-ctd10-codec.yaml.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from tests.cli.helpers import clear_edgegw_env
from tests.codec.test_profile import BASE, write_profile


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "list", "--json")
    assert code == 0
    ids = {row["id"] for row in json.loads(out)}
    assert {"milesight/em310-udl", "decentlab/dl-mbx", "milesight/ws302"} <= ids
    code, out, _ = run(capsys, "profile", "show", "milesight/em310-udl", "--json")
    doc = json.loads(out)
    assert doc["installation_params"] == ["empty_distance_mm", "full_distance_mm"]
    assert {c["name"] for c in doc["commands"]} == {
        "reboot",
        "set_collection_interval",
        "set_report_interval",
        "set_distance_alarm_config",
    }
    code, out, _ = run(capsys, "profile", "show", "milesight/em310-udl")
    assert code == 0 and "fill_level" in out
    code, _, err = run(capsys, "profile", "show", "nobody/nothing")
    assert code == 2 and "unknown profile" in err


def test_test_passes_on_the_shipped_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "test", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["passed"] >= 40 and doc["failed"] == []
    code, out, _ = run(capsys, "profile", "test", "decentlab/dl-pr26")
    assert code == 0 and "examples passed in 1 profiles" in out


def test_test_exits_1_on_a_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = copy.deepcopy(BASE)
    doc["examples"][0]["expected"] = {"battery": 93}
    write_profile(tmp_path, doc)
    code, out, err = run(capsys, "profile", "--profiles-dir", str(tmp_path), "test")
    assert code == 1
    assert "FAIL acme/bin-1#0" in out and "1 example(s) failed" in err
    code, out, _ = run(capsys, "profile", "--profiles-dir", str(tmp_path), "test", "--json")
    assert code == 1 and json.loads(out)["failed"][0]["example"] == "acme/bin-1#0"


def test_a_malformed_profile_is_exit_2_with_file_and_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(BASE)
    doc["decoder"]["channels"][0]["type"] = "uint12"
    path = write_profile(tmp_path, doc)
    code, _, err = run(capsys, "profile", "--profiles-dir", str(tmp_path), "list")
    assert code == 2
    assert f"{path}: decoder.channels[0].type: unknown value 'uint12'" in err


def test_encode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "encode", "--profile", "decentlab/dl-ctd10", "set_period_save", "seconds=3600", "--json"
    )
    assert code == 0 and json.loads(out) == {"fport": 1, "payload": "00020e1048a4"}
    code, out, _ = run(capsys, "encode", "--profile", "milesight/em310-udl", "reboot")
    assert code == 0 and out.strip() == "fport 85: ff10ff"
    code, _, err = run(
        capsys, "encode", "--profile", "milesight/em310-udl", "set_report_interval", "seconds=0"
    )
    assert code == 2 and "out of range" in err
    code, _, err = run(capsys, "encode", "--profile", "milesight/em310-udl", "set_report_interval", "600")
    assert code == 2 and "PARAM=VALUE" in err


def test_decode_with_installation_params(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("decode", "--profile", "milesight/em310-udl", "--fport", "85", "0382c201", "--json")
    code, out, _ = run(capsys, *argv, "--param", "empty_distance_mm=1200", "--param", "full_distance_mm=200")
    assert code == 0 and json.loads(out) == {"distance": 450, "fill_level": 75}
    code, _, err = run(capsys, *argv, "--param", "empty=far")
    assert code == 2 and "NAME=NUMBER" in err


def test_import_ttn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("quickjs")
    from tests.codec.test_ttn_import import write_entry

    device = write_entry(tmp_path / "ttn")
    out_dir = tmp_path / "profiles"
    code, out, _ = run(capsys, "profile", "import-ttn", str(device), "--out", str(out_dir), "--json")
    assert code == 0 and json.loads(out)["id"] == "acme/wl-1"
    code, out, _ = run(capsys, "profile", "--profiles-dir", str(out_dir), "test", "acme/wl-1")
    assert code == 0
    assert yaml.safe_load((out_dir / "acme" / "wl-1.yaml").read_text())["decoder"]["family"] == "javascript"
    code, _, err = run(capsys, "profile", "import-ttn", str(device), "--out", str(out_dir))
    assert code == 2 and "already exists" in err


def test_a_profiles_dir_adds_to_the_shipped_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    write_profile(tmp_path, BASE)
    code, out, _ = run(capsys, "profile", "list", "--json")
    shipped = {row["id"] for row in json.loads(out)}
    code, out, _ = run(capsys, "profile", "--profiles-dir", str(tmp_path), "list", "--json")
    assert code == 0 and {row["id"] for row in json.loads(out)} == shipped | {"acme/bin-1"}
    # Same id as a shipped profile: the custom one replaces it, and the log says so.
    own = copy.deepcopy(BASE)
    own["id"], own["description"] = "milesight/em310-udl", "our firmware"
    write_profile(tmp_path, own, "milesight/em310-udl.yaml")
    caplog.set_level("INFO", logger="gateway.codec.profile")
    code, out, _ = run(
        capsys, "profile", "--profiles-dir", str(tmp_path), "show", "milesight/em310-udl", "--json"
    )
    assert code == 0 and json.loads(out)["description"] == "our firmware"
    assert (
        "device profile milesight/em310-udl from " in caplog.text
        and "replaces the shipped one" in caplog.text
    )


def test_import_ttn_writes_into_the_configured_profiles_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.codec.test_ttn_import import write_entry

    clear_edgegw_env(monkeypatch)
    device = write_entry(tmp_path / "ttn")
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"gateway: {{id: gw-1}}\nmqtt: {{host: 127.0.0.1}}\ndata_dir: {tmp_path / 'data'}\n")
    code, _, err = run(capsys, "--config", str(bare), "profile", "import-ttn", str(device))
    assert code == 2 and "no profiles directory to write to: set profiles_dir in the config" in err
    own = tmp_path / "own-profiles"
    cfg = tmp_path / "edgegw.yaml"
    cfg.write_text(bare.read_text() + f"profiles_dir: {own}\n")
    code, out, _ = run(capsys, "--config", str(cfg), "profile", "import-ttn", str(device), "--json")
    assert code == 0 and json.loads(out)["profile"] == str(own / "acme" / "wl-1.yaml")
    assert (own / "acme" / "wl-1.yaml").is_file()
