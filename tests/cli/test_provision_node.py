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
