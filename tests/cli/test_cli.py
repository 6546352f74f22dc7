"""The `edgegw` command: argv → output and exit code (0 ok, 1 check failed, 2 bad usage or input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import APP, EM310, NWK, abp_argv, clear_edgegw_env, run


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_edgegw_env(monkeypatch)
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        "gateway: {id: gw-test-1}\n"
        'radio: {url: "semtech-udp://127.0.0.1:1700"}\n'
        "mqtt: {host: 127.0.0.1, port: 1883, tls: false}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    return path


def add_abp(capsys: pytest.CaptureFixture[str], config_file: Path, eui: str, addr: str, *extra: str) -> int:
    code, _, _err = run(capsys, "--config", str(config_file), "device", "add", *abp_argv(eui, addr), *extra)
    return code


def test_config_template_prints_a_config_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "config", "template")
    assert code == 0 and "gateway:" in out and "# " in out
    path = tmp_path / "t.yaml"
    path.write_text(out)
    code, out, _ = run(capsys, "config", "check", str(path))
    assert code == 0 and "OK" in out


def test_config_check_reports_file_key_path_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gateway: {id: g}\nmqtt: {port: nope}\n")
    code, out, err = run(capsys, "config", "check", str(path))
    assert code == 2 and out == ""
    assert err.strip() == f"edgegw: {path}: mqtt.port: expected an integer, got 'nope'"


def test_config_check_json_hides_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("gateway: {id: g}\nmqtt: {password: hunter2}\n")
    code, out, _ = run(capsys, "config", "check", str(path), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["config"]["mqtt"]["password"] == "<secret>"
    assert "hunter2" not in out


def test_device_add_list_remove(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add_abp(capsys, config_file, "70B3D57ED0001234", "26011001", "--site", "aix/a1") == 0
    code, out, _ = run(capsys, "--config", str(config_file), "device", "list", "--json")
    assert code == 0
    (device,) = json.loads(out)["devices"]
    assert device["dev_eui"] == "70b3d57ed0001234" and device["dev_addr"] == "26011001"
    assert device["site"] == "aix/a1" and device["activation"] == "abp"
    assert NWK not in out and "keys" not in device  # keys only when asked
    code, out, _ = run(capsys, "--config", str(config_file), "device", "list", "--show-keys", "--json")
    assert json.loads(out)["devices"][0]["keys"]["nwk_s_key"] == NWK
    code, out, _ = run(capsys, "--config", str(config_file), "device", "list")
    assert "70b3d57ed0001234" in out and NWK not in out and "1 device(s)" in out
    code, _, _ = run(capsys, "--config", str(config_file), "device", "remove", "70b3d57ed0001234", "--yes")
    assert code == 0
    code, out, _ = run(capsys, "--config", str(config_file), "device", "list", "--json")
    assert json.loads(out) == {"devices": []}


def test_device_add_otaa(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--config",
        str(config_file),
        "device",
        "add",
        "--dev-eui",
        "0000000000000002",
        "--profile",
        EM310,
        "--otaa",
        "--join-eui",
        "0000000000000001",
        "--appkey",
        APP,
        "--json",
    )
    assert code == 0 and json.loads(out)["activation"] == "otaa" and APP not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--dev-eui", "1234", "--profile", EM310, "--abp"],
            "--dev-eui: DevEui must be 8 bytes",
        ),
        (abp_argv("0000000000000001", "26011001", profile="nope/nope"), "unknown profile 'nope/nope'"),
        (abp_argv("0000000000000001", "26011001", nwk="zz"), "--nwkskey: AesKey must be hex"),
        (abp_argv("0000000000000001", "26011001", nwk=None), "--nwkskey is required"),
    ],
)
def test_device_add_bad_input_exits_2_with_one_line(
    config_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "--config", str(config_file), "device", "add", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_device_add_duplicate_exits_2(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add_abp(capsys, config_file, "0000000000000001", "26011001") == 0
    code, _, err = run(
        capsys, "--config", str(config_file), "device", "add", *abp_argv("0000000000000001", "26011002")
    )
    assert code == 2 and "already registered" in err
    code, _, err = run(capsys, "--config", str(config_file), "device", "remove", "0000000000000009")
    assert code == 2 and "not registered" in err


def test_decode_prints_the_vendor_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "decode",
        "--profile",
        EM310,
        "--fport",
        "85",
        "01755C03824408040001",
        "--json",
    )
    assert code == 0 and json.loads(out) == {"battery": 92, "distance": 2116, "position": "tilt"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", EM310, "--fport", "85", "0175"], "cannot decode"),
        (["--profile", EM310, "--fport", "85", "xyz"], "not hex"),
        (["--profile", "acme/none", "--fport", "85", "00"], "unknown profile"),
    ],
)
def test_decode_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "decode", *argv)
    assert code == 2 and out == "" and message in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(tmp_path / "none.yaml"), "device", "list")
    assert code == 2 and "cannot read" in err
