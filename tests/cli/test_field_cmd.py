"""`edgegw radio test | uplink test | diag | device show | device verify`: argv → output and exit code.

The agent side is a real ``ControlServer`` on a real Unix socket serving canned answers
and ``tail`` events (the running agent behind it is covered in tests/e2e/test_field_views.py);
the uplink test talks to the real mosquitto fixture. SNR floors: Semtech SX1276 datasheet.
"""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app.build import profile_outputs
from gateway.cli.device_views import chart_scale, judge, main_field, signal_verdict, sparkline
from gateway.cli.field_cmd import summarise
from gateway.cli.main import main
from gateway.codec import load_profiles
from gateway.control.server import ControlServer
from tests.conftest import Broker

DEV = "70b3d57ed0000001"
NWK = "2b7e151628aed2a6abf7158809cf4f3c"
APPS = "000102030405060708090a0b0c0d0e0f"
APPKEY = "f0e0d0c0b0a090807060504030201000"
PASSWORD = "s3cret-Pa55word"


def ev(verdict: str = "accepted", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "at_s": time.time(), "verdict": verdict, "rssi_dbm": -80.0, "snr_db": 6.0, "freq_hz": 868_100_000,
        "sf": 7, "gateway_eui": None, "phy_hex": "40",
    }  # fmt: skip
    if verdict == "accepted":
        base.update(dev_eui=DEV, fcnt=1, fport=85, data={"distance": 1500, "battery": 90}, decode_error=None)
    base.update(extra)
    return base


class FakeAgent:
    """A real control server on its own loop thread, answering like the agent would."""

    def __init__(self, path: Path) -> None:
        self.answers: dict[str, dict[str, Any]] = {
            "status": {"gateway_id": "gw-test-1", "pipeline": {"accepted": 3}},
            "devices": {"devices": [{"dev_eui": DEV, "profile": "milesight/em310-udl"}]},
            "recent_frames": {"frames": [{"received_at_s": 1.0, "phy_hex": "40aabb"}]},
        }
        self.requests: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, {name: self._answer(name) for name in (*self.answers, "device")})
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def _answer(self, name: str) -> Any:
        async def answer(request: dict[str, Any]) -> dict[str, Any]:
            self.requests.append(request)
            return self.answers[name]

        return answer

    def feed(self, events: list[dict[str, Any]], delay_s: float = 0.2) -> None:
        """Publish ``events`` on ``tail`` once a client has subscribed (from another thread)."""

        def run() -> None:
            deadline = time.monotonic() + 10
            while not self.server._subscribers["tail"] and time.monotonic() < deadline:
                time.sleep(0.02)
            for event in events:
                time.sleep(delay_s)
                self.loop.call_soon_threadsafe(self.server.publish, "tail", event)

        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("EDGEGW_")]:
        monkeypatch.delenv(name)
    (tmp_path / "data").mkdir()
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        "gateway: {id: gw-test-1}\n"
        f"mqtt: {{host: 127.0.0.1, port: 1, tls: false, username: tech, password: {PASSWORD}}}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    return path


@pytest.fixture
def agent(cfg: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(cfg.parent / "data" / "control.sock")
    yield fake
    fake.close()


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- radio test ---------------------------------------------------------------------------------


def test_summarise_groups_by_source_and_lists_unknown_dev_addrs() -> None:
    events = [
        ev(rssi_dbm=-90.0, snr_db=2.0),
        ev(rssi_dbm=-70.0, snr_db=8.0, sf=9),
        ev("rejected", reason="unknown_device", dev_addr="26ffffff", rssi_dbm=-110.0),
        ev("rejected", reason="bad_mic", dev_addr="26011001"),
    ]
    summary = summarise(events)
    assert summary["frames"] == 4 and summary["unknown_dev_addrs"] == ["26ffffff"]
    mine = summary["sources"][0]
    assert mine["source"] == DEV and mine["frames"] == 2 and mine["sf"] == [7, 9]
    assert mine["rssi_dbm"] == {"min": -90.0, "avg": -80.0, "max": -70.0}
    assert mine["verdicts"] == {"accepted": 2}
    by_source = {s["source"]: s for s in summary["sources"]}
    assert by_source["DevAddr 26ffffff"]["verdicts"] == {"unknown_device": 1}


def test_radio_test_summarises_what_is_heard(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.feed([ev(), ev("rejected", reason="unknown_device", dev_addr="26ffffff")], delay_s=0.1)
    code, out, _ = run(capsys, cfg, "radio", "test", "--seconds", "1.5", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["frames"] == 2 and doc["unknown_dev_addrs"] == ["26ffffff"]
    agent.feed([ev()], delay_s=0.1)
    code, out, _ = run(capsys, cfg, "radio", "test", "--seconds", "1.5")
    assert code == 0 and "1 frames in 1.5 s" in out and DEV in out


def test_radio_test_fails_when_nothing_is_heard(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, err = run(capsys, cfg, "radio", "test", "--seconds", "0.5", "--json")
    assert code == 1 and "nothing heard" in err and json.loads(out)["frames"] == 0
    assert time.monotonic() - started < 5


def test_radio_test_says_when_the_agent_is_not_running(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, cfg, "radio", "test", "--seconds", "1")
    assert code == 1 and "not running" in err


# --- uplink test --------------------------------------------------------------------------------


def _broker_config(cfg: Path, port: int) -> None:
    cfg.write_text(cfg.read_text().replace("port: 1,", f"port: {port},").replace(
        f"username: tech, password: {PASSWORD}", "topic_prefix: site-a"))  # fmt: skip


def test_uplink_test_publishes_and_reports_latency(
    cfg: Path, mosquitto: Broker, subscribe: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _broker_config(cfg, mosquitto.port)
    sub = subscribe("site-a/gw-test-1/test")
    code, out, err = run(capsys, cfg, "uplink", "test", "--json")
    doc = json.loads(out)
    assert code == 0, err
    assert doc["ok"] is True and doc["tls"] is False and doc["protocol"] == "mqttv311"
    assert doc["topic"] == "site-a/gw-test-1/test" and 0 < doc["puback_ms"] < 5000 and doc["connect_ms"] > 0
    assert sub.wait_for(lambda messages: len(messages) >= 1)
    code, out, _ = run(capsys, cfg, "uplink", "test")
    assert code == 0 and "TLS off" in out and "PUBACK in" in out


def test_uplink_test_fails_when_the_broker_is_down(
    cfg: Path, mosquitto: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    _broker_config(cfg, mosquitto.port)
    mosquitto.stop()
    code, out, err = run(capsys, cfg, "uplink", "test", "--timeout", "1.5", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and "not connected within 1.5 s" in doc["error"]
    assert "uplink test failed" in err


# --- diag ---------------------------------------------------------------------------------------


def _register(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, _, err = run(
        capsys, cfg, "device", "add", "--dev-eui", DEV, "--profile", "milesight/em310-udl", "--abp",
        "--dev-addr", "26011001", "--nwkskey", NWK, "--appskey", APPS,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(
        capsys, cfg, "device", "add", "--dev-eui", "70b3d57ed00000aa", "--profile", "milesight/em310-udl",
        "--otaa", "--join-eui", "70b3d57ed0000001", "--appkey", APPKEY,
    )  # fmt: skip
    assert code == 0, err


def _bundle(path: Path) -> dict[str, str]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _assert_no_secret(files: dict[str, str]) -> None:
    everything = "\n".join(files.values()).lower()
    for secret in (NWK, APPS, APPKEY, PASSWORD.lower()):
        assert secret not in everything


def test_diag_bundle_without_the_agent_has_config_registry_and_no_secret(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(capsys, cfg)
    out_file = tmp_path / "bundle.tar.gz"
    code, out, _ = run(capsys, cfg, "diag", "--out", str(out_file), "--json")
    assert code == 0 and json.loads(out)["agent_running"] is False
    assert out_file.stat().st_mode & 0o077 == 0
    files = _bundle(out_file)
    assert {"config.json", "devices.json", "versions.json", "log.txt", "README.txt"} <= set(files)
    config = json.loads(files["config.json"])
    assert config["mqtt"]["password"] == "<removed>" and config["mqtt"]["username"] == "tech"
    assert DEV in files["devices.json"] and "agent not reachable" in files["README.txt"]
    assert "no log file given" in files["log.txt"]
    assert json.loads(files["versions.json"])["packages"]["paho-mqtt"]
    _assert_no_secret(files)


def test_diag_bundle_with_the_agent_has_status_frames_and_log_tail_scrubbed(
    cfg: Path, agent: FakeAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(capsys, cfg)
    log_file = tmp_path / "agent.log"
    # A log line that (wrongly) carries a key and the password must still not leak into the bundle.
    log_file.write_text("".join(f"line {n}\n" for n in range(1000)) + f"oops {NWK} {PASSWORD}\nlast line\n")
    out_file = tmp_path / "b.tar.gz"
    code, out, _ = run(capsys, cfg, "diag", "--out", str(out_file), "--log-file", str(log_file))
    assert code == 0 and "wrote" in out
    files = _bundle(out_file)
    assert json.loads(files["status.json"])["pipeline"] == {"accepted": 3}
    assert json.loads(files["recent_frames.json"])["frames"][0]["phy_hex"] == "40aabb"
    lines = files["log.txt"].splitlines()
    assert len(lines) == 500 and lines[-1] == "last line" and "oops <removed> <removed>" in lines[-2]
    _assert_no_secret(files)


# --- device show / verify -----------------------------------------------------------------------


def test_signal_verdict_thresholds() -> None:
    assert signal_verdict(-100.0, 0.0, 7) is None
    assert "RSSI -118" in str(signal_verdict(-118.0, 0.0, 7))
    assert "SNR -5.0 dB at SF7" in str(signal_verdict(-100.0, -5.0, 7))  # floor -7.5 + 5 = -2.5
    assert signal_verdict(-100.0, -14.0, 12) is None  # floor -20 + 5 = -15


def test_judge_names_the_reason() -> None:
    assert judge([ev()], 1, False) == (True, "1 uplink(s) decoded, signal above the thresholds")
    assert judge([], 1, True)[1].startswith("not heard")
    assert "rejected: bad_mic" in judge([ev("rejected", reason="bad_mic")], 1, True)[1]
    assert "joined, but no uplink" in judge([ev("joined", dev_eui=DEV)], 1, True)[1]
    assert "not decodable" in judge([ev(decode_error="short payload")], 1, False)[1]
    assert "only 1 of 2" in judge([ev()], 2, True)[1]
    assert judge([ev(rssi_dbm=-120.0)], 1, False)[0] is False


def _device_answer(readings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "device": {
            "dev_eui": DEV, "profile": "milesight/em310-udl", "activation": "abp", "site": "demo/a",
            "dev_addr": "26011001", "fcnt_up": 4, "lat": None, "lon": None,
            "params": {"empty_distance_mm": 1800},
        },
        "heard": {"last_seen_s": time.time(), "rssi_dbm": -80.0, "snr_db": 6.0, "frames": 4, "errors": 0},
        "readings": readings,
    }  # fmt: skip


def test_device_show_charts_a_value(cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    readings = [
        {"at_s": now - 60 * (4 - n), "fcnt": n, "fport": 85, "rssi_dbm": -80.0, "snr_db": 6.0, "sf": 7,
         "data": {"battery": 90, "distance": d, "position": "normal"}, "decode_error": None}
        for n, d in enumerate((1800, 1500, 1000, 600))
    ]  # fmt: skip
    agent.answers["device"] = _device_answer(readings)
    code, out, _ = run(capsys, cfg, "device", "show", DEV, "--value", "distance", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["chart"]["value"] == "distance"
    assert [v for _, v in doc["chart"]["points"]] == [1800, 1500, 1000, 600]
    assert agent.requests[-1]["dev_eui"] == DEV and agent.requests[-1]["since_s"] < now - 23 * 3600
    code, out, _ = run(capsys, cfg, "device", "show", DEV, "--value", "distance", "--hours", "2")
    assert code == 0 and "distance, last 2 h (4 readings, min 600, max 1800" in out
    assert sparkline([1800, 1500, 1000, 600]) in out and "empty_distance_mm=1800" in out
    code, _, err = run(capsys, cfg, "device", "show", DEV, "--value", "nope")
    assert code == 2 and "battery, distance" in err


def test_sparkline_scales_between_min_and_max() -> None:
    # Issue 19: a flat line sits mid-height (it was drawn at the bottom, "▁▁").
    assert sparkline([0, 7, 14]) == "▁▅█" and sparkline([5, 5]) == "▅▅" and sparkline([]) == ""


def test_a_small_change_does_not_fill_the_chart_and_the_main_quantity_is_charted() -> None:
    # 24 -> 25 cm drew "▁█", a flood; the scale spans at least 10 % of the value now.
    assert chart_scale([24.0, 25.0]) == (23.25, 25.75)
    assert sparkline([24.0, 25.0]) == "▃▆"
    noise = [{"name": "loud", "quantity": "alarm", "unit": None},
             {"name": "laeq", "quantity": "sound_level_eq", "unit": "dB"},
             {"name": "battery_voltage", "quantity": "battery_voltage", "unit": "mV"}]  # fmt: skip
    assert main_field(noise, ["battery_voltage", "laeq", "loud"]) == "laeq"
    assert main_field([], ["battery", "rssi", "distance"]) == "distance"  # no outputs: by name
    assert main_field([{"name": "laeq", "main": True}], ["battery", "laeq"]) == "laeq"


def test_radio_test_does_not_count_downlinks() -> None:
    down = {"at_s": 0.0, "verdict": "downlink", "dev_eui": DEV, "status": "sent"}
    assert summarise([ev(), down])["frames"] == 1


def test_device_verify_passes_on_a_good_uplink(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.answers["device"] = _device_answer([])
    other = ev(dev_eui="70b3d57ed0000002")
    agent.feed([other, ev("rejected", reason="bad_mic", dev_addr="26ffffff"), ev()])
    code, out, _ = run(capsys, cfg, "device", "verify", DEV, "--timeout", "10", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["verdict"] == "PASS" and len(doc["events"]) == 1


def test_device_verify_fails_on_weak_signal_and_on_timeout(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.answers["device"] = _device_answer([])
    agent.feed([ev(rssi_dbm=-119.0)])
    code, out, _ = run(capsys, cfg, "device", "verify", DEV, "--timeout", "10")
    assert code == 1 and "FAIL weak signal: RSSI -119 dBm" in out
    agent.feed([ev("rejected", reason="bad_mic", dev_addr="26011001")])
    code, out, _ = run(capsys, cfg, "device", "verify", DEV, "--timeout", "1.5", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "FAIL" and "rejected: bad_mic" in doc["reason"]


def test_sparkline_output_is_plain_when_piped(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.answers["device"] = _device_answer([])
    code, out, _ = run(capsys, cfg, "device", "show", DEV)
    assert code == 0 and "\x1b[" not in out and "no numeric readings in the last 24 h" in out


def test_device_show_charts_the_main_quantity_a_profile_declares() -> None:
    # The WS302's outputs are templates (L{weighting}...): its declared main quantity, LAeq, is
    # charted, not the battery that comes first in the readings.
    outputs = profile_outputs(load_profiles(None), "milesight/ws302")
    assert main_field(outputs, ["battery", "LAF", "LAeq", "LAFmax"]) == "LAeq"


def test_radio_test_progress_piped_is_lines_json_unchanged_quiet_silent(
    cfg: Path, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.feed([ev(), ev()], delay_s=0.1)
    code, out, err = run(capsys, cfg, "radio", "test", "--seconds", "1.5", "--json")
    assert code == 0 and json.loads(out)["frames"] == 2  # stdout: the JSON document alone
    lines = err.splitlines()
    assert lines and all(line.startswith("radio test: listening") for line in lines) and "\r" not in err
    agent.feed([ev()], delay_s=0.1)
    code, out, err = run(capsys, cfg, "radio", "test", "--seconds", "1", "--json", "--quiet")
    assert code == 0 and json.loads(out)["frames"] == 1 and err == ""
