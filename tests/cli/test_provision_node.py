"""`edgegw provision node`: registry → fake MicroPython node on a pty → output and exit code.

The fake node is tests/provisioning/test_node.py's (raw REPL as in MicroPython's docs and
tools/pyboard.py); the keys are the RFC 4493 / LoRaWAN test AppKey pattern 00..0f.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import run_with_config as run
from tests.provisioning.test_node import APP_KEY, FakeMicroPython

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from lorawan import multicast  # type: ignore[import-not-found]

DEV = "70b3d57ed0000101"


def provision_node(
    capsys: pytest.CaptureFixture[str], cfg: Path, port: str, *extra: str, dev: str = DEV
) -> tuple[int, str, str]:
    return run(capsys, cfg, "provision", "node", "--port", port, "--dev-eui", dev, *extra)


def add(capsys: pytest.CaptureFixture[str], cfg: Path, *params: str) -> None:
    argv = ["device", "add", "--dev-eui", DEV, "--profile", "edgegw/fill-level", "--otaa"]
    argv += ["--join-eui", "70b3d57ed0000001", "--appkey", APP_KEY]
    for p in params:
        argv += ["--param", p]
    assert run(capsys, cfg, *argv)[0] == 0


@pytest.fixture
def flash(tmp_path: Path) -> Path:
    root = tmp_path / "flash"
    root.mkdir()
    return root


def test_provision_node_installs_firmware_and_config_verified(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add(capsys, cfg, "empty_distance_mm=1800", "full_distance_mm=300")
    with FakeMicroPython(flash) as fake:
        code, out, err = provision_node(capsys, cfg, fake.port, "--json")
    assert code == 0, err
    doc = json.loads(out)
    paths = [f["path"] for f in doc["files"]]
    assert "/lib/lorawan/device.py" in paths and paths[-1] == "/config.json"
    on_node = json.loads((flash / "config.json").read_text())
    assert on_node["otaa"]["app_key"] == APP_KEY and on_node["params"]["empty_distance_mm"] == 1800
    assert APP_KEY not in out + err and APP_KEY.upper() not in out + err


def test_config_only_with_interval_override_and_text_output(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add(capsys, cfg, "empty_distance_mm=1800", "full_distance_mm=300")
    with FakeMicroPython(flash) as fake:
        code, out, _ = provision_node(capsys, cfg, fake.port, "--config-only", "--report-interval-s", "600")
    assert code == 0 and "1 file(s)" in out and "verified" in out and APP_KEY not in out
    assert json.loads((flash / "config.json").read_text())["settings"]["report_interval_s"] == 600
    assert not (flash / "lib").exists()


def test_silent_node_exits_1_and_reports_nothing_written(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add(capsys, cfg, "empty_distance_mm=1800", "full_distance_mm=300")
    fake = FakeMicroPython(flash)  # never started
    try:
        code, out, err = provision_node(capsys, cfg, fake.port, "--config-only", "--timeout-s", "0.3")
    finally:
        os.close(fake._master)
        os.close(fake._slave)
    assert code == 1 and out == "" and "no answer from the node" in err
    assert list(flash.iterdir()) == []


def test_corrupted_write_exits_1(cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add(capsys, cfg, "empty_distance_mm=1800", "full_distance_mm=300")
    with FakeMicroPython(flash, corrupt=True) as fake:
        code, out, err = provision_node(capsys, cfg, fake.port, "--config-only")
    assert code == 1 and out == "" and "verification failed" in err and "nothing was installed" in err
    assert not (flash / "config.json").exists() and APP_KEY not in err


def test_missing_container_params_and_unknown_device_exit_2(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add(capsys, cfg, "empty_distance_mm=1800")
    code, _, err = provision_node(capsys, cfg, "/dev/null")
    assert code == 2 and "full_distance_mm" in err
    code, _, err = provision_node(capsys, cfg, "/dev/null", dev="70b3d57ed0000999")
    assert code == 2 and "not registered" in err


class _Recorder(io.StringIO):
    """stderr that notes, at each progress line, how many files the node holds staged (``.new``)."""

    def __init__(self, flash: Path) -> None:
        super().__init__()
        self.flash = flash
        self.staged_at: list[int] = []

    def write(self, text: str) -> int:
        if "files written" in text:
            self.staged_at.append(len(list(self.flash.rglob("*.new"))))
        return super().write(text)


def test_progress_says_each_file_as_it_is_written(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add(capsys, cfg, "empty_distance_mm=1800", "full_distance_mm=300")
    recorder = _Recorder(flash)
    monkeypatch.setattr(sys, "stderr", recorder)
    with FakeMicroPython(flash) as fake:
        code, out, _ = provision_node(capsys, cfg, fake.port, "--json")
    assert code == 0
    files = json.loads(out)["files"]  # --json unchanged
    lines = recorder.getvalue().splitlines()
    assert "\r" not in recorder.getvalue()
    written = [line for line in lines if "files written" in line and "/config.json" not in line]
    assert f"1/{len(files)} files written" in written[1] and f"{len(files)}/{len(files)}" in lines[-1]
    # Said while writing, not all at the end: the line for file k came with k files staged on the node.
    assert recorder.staged_at[1 : len(files) + 1] == list(range(1, len(files) + 1))


# --- the class C multicast groups of the device -----------------------------------------------

LAMP = "70b3d57ed0000201"


def _lamp(capsys: pytest.CaptureFixture[str], cfg: Path, eui: str = LAMP, addr: str = "26011e01") -> None:
    argv = ["device", "add", "--dev-eui", eui, "--profile", "edgegw/lamp-controller", "--abp"]
    argv += ["--dev-addr", addr, "--nwkskey", APP_KEY, "--appskey", APP_KEY, "--class", "C"]
    assert run(capsys, cfg, *argv)[0] == 0


def _group(capsys: pytest.CaptureFixture[str], cfg: Path, name: str, *extra: str) -> dict[str, object]:
    code, out, err = run(capsys, cfg, "group", "add", name, "--json", *extra)
    assert code == 0, err
    printed: dict[str, object] = json.loads(out)
    return printed


def test_config_holds_the_groups_the_device_is_a_member_of_with_their_keys(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _lamp(capsys, cfg)
    run(capsys, cfg, "device", "rekey")  # a key file: the group keys are encrypted at rest
    north = _group(capsys, cfg, "district-north")
    _group(capsys, cfg, "district-east")  # the lamp is not a member: not in its config
    assert run(capsys, cfg, "group", "add-member", "district-north", LAMP)[0] == 0
    with FakeMicroPython(flash) as fake:
        code, out, err = provision_node(capsys, cfg, fake.port, "--config-only", "--json", dev=LAMP)
    assert code == 0, err
    assert json.loads(out)["multicast_groups"] == [north["mc_addr"]]
    on_node = json.loads((flash / "config.json").read_text())
    # As `edgegw group add` printed it, on the agent's RX2 channel (869.525 MHz DR0 by default).
    assert on_node["multicast"] == [
        {
            "mc_addr": north["mc_addr"],
            "mc_nwk_s_key": north["mc_nwk_s_key"],
            "mc_app_s_key": north["mc_app_s_key"],
            "freq_hz": 869_525_000,
            "dr": 0,
        }
    ]
    assert str(north["mc_app_s_key"]) not in out + err
    # The firmware takes it as it is.
    assert multicast.Multicast.from_config(on_node["multicast"]).channel() == (869_525_000, 0)


def test_a_device_in_no_group_gets_no_multicast_key(
    cfg: Path, flash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _lamp(capsys, cfg)
    _group(capsys, cfg, "district-north")
    with FakeMicroPython(flash) as fake:
        code, out, _ = provision_node(capsys, cfg, fake.port, "--config-only", dev=LAMP)
    assert code == 0 and "multicast" not in out
    assert "multicast" not in json.loads((flash / "config.json").read_text())


def test_groups_on_two_channels_are_refused(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _lamp(capsys, cfg)
    _group(capsys, cfg, "district-north")
    _group(capsys, cfg, "city", "--dr", "3")
    for name in ("district-north", "city"):
        assert run(capsys, cfg, "group", "add-member", name, LAMP)[0] == 0
    code, _, err = provision_node(capsys, cfg, "/dev/null", "--config-only", dev=LAMP)
    assert code == 2 and "different channels" in err and "city, district-north" in err
