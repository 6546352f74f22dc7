"""Issue 19: views a technician can read at 80 columns and pipe, and the CLI's usage help.

The agent side is a real ``ControlServer`` on a real Unix socket with canned answers (the running
agent behind it: tests/e2e/test_cli_views.py). "Never a word broken": every word printed is a
word of the data, whole, or its start followed by ``…``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import layout
from gateway.cli.main import main
from gateway.cli.views_cmd import duration_s, select_devices
from gateway.control.server import ControlServer
from tests.cli.helpers import abp_argv, run_with_config

REPO = Path(__file__).resolve().parents[2]
LONG_SITE = "metropole/quartier-saint-michel/rue-des-tanneurs-42"
PROFILES = ("nasys/ul20xx", "milesight/em310-udl", "decentlab/dl-mbx")


def devices_answer(now_s: float) -> list[dict[str, Any]]:
    """Four devices: one never heard, the others 10, 20, 30 min ago; long sites but one."""
    rows = [
        {"dev_eui": f"70b3d57ed000000{n}", "profile": PROFILES[n % 3], "site": f"{LONG_SITE}-{n}",
         "last_seen_s": now_s - 600 * n if n else None, "rssi_dbm": None if n == 0 else -60.0 - 10 * n,
         "snr_db": 7.5, "battery": 98.0, "frames_24h": 120 + n, "errors": n}
        for n in range(4)
    ]  # fmt: skip
    rows[3]["site"] = "demo/container-3"
    return rows


STATUS: dict[str, Any] = {
    "version": "0.1.0", "gateway_id": "gw-test-1", "uptime_s": 14.0,
    "radio": {"url": "semtech-udp://127.0.0.1:1700", "frames_per_min": 239.7},
    "pipeline": {"accepted": 50, "decoded": 50, "rejected.bad_mic": 2, "rejected.unknown_device": 2,
                 "rejected.replayed_fcnt": 1, "rejected.too_short": 4},
    "uplink": {"broker": "mqtt-broker.platform.metropole.example.org:8883", "connected": False,
               "forwarder": {"records_acked": 49}},
    "outbox": {"depth": 1, "bytes": 423, "oldest_age_s": 0.0},
    "storage": {}, "salvage": None, "clock": {"time_quality": "unsynced"},
    "devices": {"registered": 6, "heard": 6},
}  # fmt: skip
RULES_FILE = """
schema_version: 1
location: {lat: 48.85, lon: 2.35, timezone: Europe/Paris}
rules:
  - id: container-full
    devices: {profiles: [milesight/em310-udl]}
    when: {threshold: {value: {field: distance, fill_empty: 2000, fill_full: 300}, above: 80}}
"""
STEP_S = 1774735200.0  # 2026-03-28T22:00:00Z: 23:00 in Paris (CET), 22:00 on a UTC gateway


class FakeAgent:
    """A real control server on its own loop thread; each query answers ``answers[name]``, or
    refuses as the agent does (``ValueError``) when the answer is an exception."""

    def __init__(self, path: Path, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, {name: self._answer(name) for name in answers})
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def _answer(self, name: str) -> Any:
        async def answer(_request: dict[str, Any]) -> dict[str, Any]:
            value = self.answers[name]
            if isinstance(value, Exception):
                raise value
            return dict(value)

        return answer

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def agent(cfg: Path, tmp_path: Path) -> Iterator[FakeAgent]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_FILE)
    (tmp_path / "data").mkdir(exist_ok=True)
    fake = FakeAgent(
        tmp_path / "data" / "control.sock",
        {
            "status": STATUS,
            "devices": {"devices": devices_answer(time.time())},
            "device": ValueError("device 70b3d57ed00000ff is not registered"),
            "rules": {
                "enabled": True,
                "path": str(rules),
                "source": str(rules),
                "devices": 4,
                "rules": [
                    {
                        "id": "container-full",
                        "severity": "warning",
                        "disabled": None,
                        "open": ["70b3d57ed0000001"],
                    }
                ],
                "aggregates": [],
                "lighting": {"avenue": {}},
                "open_episodes": [
                    {
                        "rule": "container-full",
                        "dev_eui": "70b3d57ed0000001",
                        "alert_id": "a1",
                        "since_s": STEP_S - 3600,
                        "value": 40.0,
                        "raised_value": 92.0,
                    }
                ],
                "pending": [],
                "disabled": {},
                "last_reload": None,
                "next_lighting_change": {"at_s": STEP_S, "group": "avenue", "level_pct": 50},
            },
        },
    )  # fmt: skip
    yield fake
    fake.close()


def assert_fits(out: str, room: int, words_from: list[str]) -> None:
    """No line over ``room``; every word printed is a whole word of the data or a cut one (``…``)."""
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= room, "\n".join(lines)
    known = {w for text in words_from for w in text.split()}
    for word in (w for line in lines for w in line.split()):
        if word.endswith(layout.ELLIPSIS):
            assert any(k.startswith(word[:-1]) for k in known), (word, out)
        else:
            assert word in known, (word, out)


# --- 80 columns -----------------------------------------------------------------------------------


def test_devices_fit_80_columns_cut_with_an_ellipsis_never_mid_word(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    devices = devices_answer(time.time())
    agent.answers["devices"] = {"devices": devices}
    code, out, _ = run_with_config(capsys, cfg, "devices")
    header = "device profile site last seen RSSI/SNR batt 24 h err never min ago - -70/7.5 -80/7.5 -90/7.5"
    values = [header, *(f"{d['dev_eui']} {d['profile']} {d['site']} {d['frames_24h']} 98" for d in devices)]
    assert code == 0
    assert_fits(out, 80, [*values, "0 1 2 3 10 20 30"])
    assert layout.ELLIPSIS in out
    assert [line.split()[0] for line in out.splitlines()[1:]] == [d["dev_eui"] for d in devices]
    code, wide, _ = run_with_config(capsys, cfg, "devices", "--wide")
    assert code == 0 and LONG_SITE + "-1" in wide and "nasys/ul20xx" in wide and layout.ELLIPSIS not in wide


def test_views_piped_without_columns_keep_to_80(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # captured stdout: no terminal, so 80
    for view in ("devices", "status", "rules"):
        code, out, _ = run_with_config(capsys, cfg, view)
        assert code == 0 and max(len(line) for line in out.splitlines()) <= 80, out


def test_status_wraps_at_spaces_under_its_value(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = run_with_config(capsys, cfg, "status")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 60 and "\x1b[" not in out  # no colour when piped
    frames = lines.index(next(line for line in lines if line.startswith("frames")))
    assert lines[frames + 1].startswith(" " * 9) and lines[frames + 1].strip()  # continued under the value
    assert "mqtt-broker.platform.metropole.example.org:8883," in out  # the long word whole
    assert "DISCONNECTED" in out and "unsynced (no NTP/GPS yet)" in out


def test_table_cuts_the_widest_flexible_column_first() -> None:
    columns = (layout.Column("id"), layout.Column("name", shrink=True), layout.Column("n", right=True))
    rows = [["a1", "a-very-long-name-indeed", "7"], ["b2", "short", "12"]]
    assert layout.table(columns, rows, 20) == [
        "id  name           n",
        "a1  a-very-long…   7",
        "b2  short         12",
    ]
    assert layout.table(columns, rows, None)[1] == "a1  a-very-long-name-indeed   7"
    assert layout.labelled("x", "one two three", 14, 4) == ["x   one two", "    three"]
    assert layout.labelled("x", "a-word-too-long-for-it", 14, 4) == ["x   a-word-to…"]


def test_width_is_columns_else_80_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "132")
    assert layout.width() == 132 and layout.width(wide=True) is None
    monkeypatch.delenv("COLUMNS")
    assert layout.width() == 80  # pytest's captured stdout is no terminal


# --- devices: filters and sort --------------------------------------------------------------------


def test_devices_filter_by_site_and_silence_and_sort(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_with_config(capsys, cfg, "devices", "--json", "--site", "demo/*")
    assert code == 0 and [d["dev_eui"] for d in json.loads(out)["devices"]] == ["70b3d57ed0000003"]
    code, out, _ = run_with_config(capsys, cfg, "devices", "--json", "--silent-for", "15min")
    assert [d["dev_eui"] for d in json.loads(out)["devices"]] == ["70b3d57ed0000000", "70b3d57ed0000002",
                                                                   "70b3d57ed0000003"]  # fmt: skip
    code, out, _ = run_with_config(capsys, cfg, "devices", "--json", "--sort", "rssi")
    assert [d["rssi_dbm"] for d in json.loads(out)["devices"]] == [-90.0, -80.0, -70.0, None]
    code, out, _ = run_with_config(capsys, cfg, "devices", "--sort", "last_seen")
    firsts = [line.split()[0] for line in out.splitlines()[1:]]
    assert firsts == ["70b3d57ed0000000", "70b3d57ed0000003", "70b3d57ed0000002", "70b3d57ed0000001"]
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(cfg), "devices", "--silent-for", "two hours"])
    assert exit_.value.code == 2 and "not a duration" in capsys.readouterr().err


def test_durations_and_selection_are_pure() -> None:
    assert [duration_s(t) for t in ("90", "90s", "30min", "30m", "2h", "1d", "1.5h")] == [
        90.0, 90.0, 1800.0, 1800.0, 7200.0, 86400.0, 5400.0,
    ]  # fmt: skip
    rows = [{"dev_eui": "b", "site": "Demo/A"}, {"dev_eui": "a", "site": ""}]
    picked = select_devices(rows, site="demo/*", silent_for_s=None, sort="dev_eui", now_s=0.0)
    assert [d["dev_eui"] for d in picked] == ["b"]  # case-insensitive pattern


# --- status --watch -------------------------------------------------------------------------------


def test_status_watch_refreshes_then_stops(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, _ = run_with_config(capsys, cfg, "status", "--watch", "0.5", "--count", "3")
    assert code == 0 and out.count("agent    edgegw 0.1.0") == 3 and out.count("\n--- ") == 2
    assert time.monotonic() - started >= 1.0  # two waits between three refreshes
    code, out, _ = run_with_config(capsys, cfg, "status", "--watch", "0.5", "--count", "2", "--json")
    assert code == 0 and [json.loads(line)["gateway_id"] for line in out.splitlines()] == ["gw-test-1"] * 2
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(cfg), "status", "--watch", "0.1"])
    assert exit_.value.code == 2 and "between 0.5 and 3600" in capsys.readouterr().err


# --- rules ----------------------------------------------------------------------------------------


def test_rules_view_says_times_in_the_rules_zone_and_the_raising_value(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the gateway's clock on UTC; the rules are Paris's
    time.tzset()
    try:
        code, out, _ = run_with_config(capsys, cfg, "rules", "--wide")
        narrow = run_with_config(capsys, cfg, "rules")[1]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert code == 0
    assert "next lighting change: 2026-03-28 23:00:00 CET group avenue to 50 %" in out
    assert "container-full 70b3d57ed0000001 since 2026-03-28 22:00:00 CET, raised at 92, now 40" in out
    assert max(len(line) for line in narrow.splitlines()) <= 80 and "  now 40" in narrow


def test_rules_test_says_the_lighting_reason_time_not_unix_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lighting = str(REPO / "rules/examples/lighting.yaml")
    code, out, _ = run_with_config(
        capsys, REPO / "no-config.yaml", "rules", "test", "--rules", lighting,
        "--start", "2024-03-30T12:00:00Z", "--until", "2024-03-31T12:00:00Z",
    )  # fmt: skip
    assert code == 0 and "since 2024-03-30 19:" in out
    assert not any(word.isdigit() and len(word) >= 9 for word in out.replace(")", " ").split())


# --- tail --device --------------------------------------------------------------------------------


def test_tail_refuses_a_device_that_is_not_a_dev_eui(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_with_config(capsys, cfg, "tail", "--device", "nothex")
    assert code == 2 and "16 hex digits" in err


def test_tail_says_once_that_a_device_is_not_registered(cfg: Path, agent: FakeAgent) -> None:
    tail = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(cfg), "tail", "--device", "70B3D57ED00000FF"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert tail.stderr is not None
        line = tail.stderr.readline()  # said at once, while tail keeps waiting for the device
        assert "70b3d57ed00000ff is not registered: showing nothing until it is" in line
        assert tail.poll() is None
    finally:
        tail.terminate()
        tail.wait(10)


# --- usage ----------------------------------------------------------------------------------------


def test_bare_edgegw_lists_the_commands_and_a_typo_gets_a_suggestion(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "status" in err and "one screen: radio, uplink, outbox" in err
    with pytest.raises(SystemExit) as exit_:
        main(["stauts"])
    assert exit_.value.code == 2 and "edgegw: did you mean 'status'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["device", "lsit"])
    assert exit_.value.code == 2 and "did you mean 'list'?" in capsys.readouterr().err


def test_lorawan_decode_prints_fctrl_as_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_with_config(
        capsys, REPO / "no-config.yaml", "lorawan", "decode", "40F17DBE4900020001954378762B11FF0D"
    )
    assert code == 0 and "fctrl: adr=no adr_ack_req=no ack=no fpending=no fopts_len=0" in out
    assert "mic_ok: -" in out and "{" not in out


# --- device remove asks ---------------------------------------------------------------------------


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_device_remove_asks_on_a_terminal_and_refuses_without_one(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    eui = "70b3d57ed0001234"
    assert run_with_config(capsys, cfg, "device", "add", *abp_argv(eui, "26011001"))[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # piped: no terminal
    code, _, err = run_with_config(capsys, cfg, "device", "remove", eui)
    assert code == 2 and "--yes" in err
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, _, err = run_with_config(capsys, cfg, "device", "remove", eui)
    assert code == 1 and "not removed" in err
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, _ = run_with_config(capsys, cfg, "device", "remove", eui)
    assert code == 0 and f"removed {eui}" in out
    assert json.loads(run_with_config(capsys, cfg, "device", "list", "--json")[1]) == {"devices": []}


# --- diag -----------------------------------------------------------------------------------------


def test_diag_that_cannot_write_says_so(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_with_config(capsys, cfg, "diag", "--out", str(tmp_path / "no-such-dir" / "b.tar.gz"))
    assert code == 2 and "cannot write the bundle" in err and "--out" in err and "Traceback" not in err


def test_diag_takes_the_journal_when_there_is_no_log_file(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journalctl = bin_dir / "journalctl"
    journalctl.write_text('#!/bin/sh\necho "args: $*"\necho "edgegw[812]: summary accepted 12"\n')
    journalctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out_file = tmp_path / "b.tar.gz"
    code, _, _ = run_with_config(capsys, cfg, "diag", "--out", str(out_file))
    assert code == 0
    with tarfile.open(out_file) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/log.txt"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        log = extracted.read().decode()
    assert "args: -u edgegw -n 500 --no-pager" in log and "summary accepted 12" in log


# --- a reader that goes away ----------------------------------------------------------------------


def edgegw_into_closed_pipe(cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``edgegw argv | head -0``, deterministic: the pipe's reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(cfg), *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ("config", "template"),
        ("device", "list"),
        ("device", "list", "--json"),
        ("profile", "list"),
        ("--help",),
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(
    cfg: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert run_with_config(capsys, cfg, "device", "add", *abp_argv("70b3d57ed0001234", "26011001"))[0] == 0
    done = edgegw_into_closed_pipe(cfg, *argv)
    assert (done.returncode, done.stderr) == (0, "")


def test_piped_into_head_no_traceback() -> None:
    """A real ``| head -1`` on more than a pipe holds (about 200 KB): the later writes meet no reader."""
    lighting = REPO / "rules/examples/lighting.yaml"
    command = (
        f'"{sys.executable}" -m gateway rules test --rules {lighting} --tick-s 3600 '
        "--start 2024-01-01T00:00:00Z --until 2024-06-01T00:00:00Z | head -1; echo $? >&2"
    )
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.stderr == "0\n" and done.stdout.startswith("rules ") and len(done.stdout.splitlines()) == 1
