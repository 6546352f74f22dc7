"""The registry's device class (A or C) in `devices --link` and `device show` (issue 20).

The agent answers with the registry rows (``registry.Device.as_json``: ``class``); the views are
run through the CLI against a real control server (tests/cli/test_field_cmd.py's ``FakeAgent``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import layout, views_cmd
from gateway.cli.device_views import device_class_text
from tests.cli.test_field_cmd import DEV, FakeAgent, _device_answer, run
from tests.cli.test_field_cmd import cfg as cfg  # the fixture, for pytest

LAMP = "70b3d57ed00c0001"


@pytest.fixture
def agent(cfg: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(cfg.parent / "data" / "control.sock")
    yield fake
    fake.close()


def _rows() -> list[dict[str, Any]]:
    # The widest cells each column can have: the site is the only one that gives way.
    common = {"site": "a-long-site-name/street/number-12", "last_seen_s": time.time() - 1800,
              "rssi_dbm": -112.0, "snr_db": -9.5, "dr": 0, "tx_power_dbm": 16,
              "link_margin_db": -10.5}  # fmt: skip
    return [
        {"dev_eui": DEV, "profile": "milesight/em310-udl", "class": "A", **common},
        {"dev_eui": LAMP, "profile": "edgegw/lamp-controller", "class": "C", **common},
    ]


def test_devices_link_shows_each_devices_class_within_80_columns(
    cfg: Path,
    agent: FakeAgent,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    agent.answers["devices"] = {"devices": _rows()}
    code, out, _ = run(capsys, cfg, "devices", "--link")
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80, out
    assert lines[0].split()[:3] == ["device", "class", "site"]
    assert [line.split()[:2] for line in lines[1:]] == [[DEV, "A"], [LAMP, "C"]]
    assert [line.split()[-3:] for line in lines[1:]] == [["DR0", "16", "-10.5"]] * 2  # nothing cut
    code, out, _ = run(capsys, cfg, "devices", "--link", "--json")
    assert [d["class"] for d in json.loads(out)["devices"]] == ["A", "C"]


def test_a_row_without_a_class_shows_a_dash() -> None:
    (row,) = [{k: v for k, v in _rows()[0].items() if k != "class"}]
    assert views_cmd.link_lines([row], 80)[1].split()[1] == "-"
    assert max(len(line) for line in views_cmd.link_lines(_rows(), layout.DEFAULT_WIDTH)) <= 80


def test_device_show_says_the_class(cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    answer = _device_answer([])
    answer["device"] = {**answer["device"], "class": "C"}
    agent.answers["device"] = answer
    code, out, _ = run(capsys, cfg, "device", "show", DEV)
    lines = out.splitlines()
    class_line = next(line for line in lines if line.startswith("class"))
    assert code == 0 and class_line.split()[1:3] == ["C:", "listens"] and max(map(len, lines)) <= 80
    assert device_class_text({"class": "A"}).startswith("A: listens after its uplinks")
    assert device_class_text({}) == device_class_text({"class": "A"})  # a row from before the class
