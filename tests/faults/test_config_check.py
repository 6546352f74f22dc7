"""`edgegw config check` is honest (issue 16, finding 8, second half).

Before, it said OK for configs `edgegw run` refuses (a radio URL typo, port 99999, a missing CA file,
a data_dir that cannot be created, a missing rules file), a repeated key silently won, and a config
saved in Latin-1 gave a traceback in `config check`, `run` and `status`. Now `config check` runs every
start-up check (``gateway.preflight``) and lists every problem at once, human and ``--json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import clear_edgegw_env, run

GOOD = (
    "gateway: {{id: gw-test-1}}\n"
    'radio: {{url: "{url}"}}\n'
    "mqtt: {{host: 127.0.0.1, port: {port}, tls: {tls}, ca_file: '{ca_file}'}}\n"
    "data_dir: {data_dir}\n"
    "rules: {{path: '{rules}'}}\n"
)


def write_config(tmp_path: Path, **change: str) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text("schema_version: 1\nrules: []\n")
    values = {
        "url": "semtech-udp://127.0.0.1:1700",
        "port": "1883",
        "tls": "false",
        "ca_file": "",
        "data_dir": str(tmp_path / "data"),
        "rules": str(rules),
    }
    values.update(change)
    path = tmp_path / "edgegw.yaml"
    path.write_text(GOOD.format(**values))
    return path


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_edgegw_env(monkeypatch)


def test_a_good_config_checks_and_the_check_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    code, out, err = run(capsys, "config", "check", str(path))
    assert (code, err) == (0, "") and "OK" in out
    assert not (tmp_path / "data").exists()  # creatable, and not created by a check


@pytest.mark.parametrize(
    ("change", "key_path", "reason"),
    [
        ({"url": "semtch-udp://127.0.0.1:1700"}, "radio.url", "unknown radio backend 'semtch-udp'"),
        ({"url": "semtech-udp://127.0.0.1:99999"}, "radio.url", "Port out of range"),
        ({"url": "semtech-udp://127.0.0.1:1700?tx_ack_timout_s=1"}, "radio.url", "unknown parameter"),
        # An address this host does not have (TEST-NET-1: a bind is tried, nothing is sent).
        ({"url": "semtech-udp://192.0.2.1:1700"}, "radio.url", "cannot bind 192.0.2.1"),
        ({"port": "99999"}, "mqtt.port", "expected a port in 1..65535, got 99999"),
        (
            {"tls": "true", "ca_file": "/nonexistent/ca.pem"},
            "mqtt.ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        ({"data_dir": "/proc/edgegw-data"}, "data_dir", "cannot be created"),
        ({"rules": "/nonexistent/rules.yaml"}, "rules.path", "cannot read /nonexistent/rules.yaml"),
    ],
)
def test_each_config_run_refuses_is_refused_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], key_path: str, reason: str
) -> None:
    path = write_config(tmp_path, **change)
    code, out, err = run(capsys, "config", "check", str(path))
    (line,) = err.splitlines()
    assert code == 2 and out == ""
    assert line.startswith(f"edgegw: {path}: {key_path}: ") and reason in line


def test_a_data_dir_under_a_file_cannot_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    path = write_config(tmp_path, data_dir=str(tmp_path / "afile" / "data"))
    code, _, err = run(capsys, "config", "check", str(path))
    assert code == 2
    afile = tmp_path / "afile"
    assert err == f"edgegw: {path}: data_dir: {afile}/data cannot be created: {afile} is not a directory\n"


def test_a_repeated_key_is_refused_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edgegw.yaml"
    path.write_text("gateway: {id: gw-1}\nmqtt:\n  port: 1883\n  tls: false\n  port: 8883\n")
    code, _, err = run(capsys, "config", "check", str(path))
    assert code == 2
    assert (
        err == f"edgegw: {path}: not valid YAML: line 5, column 3: duplicate key 'port' (first on line 3)\n"
    )


def test_rules_file_content_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    (tmp_path / "rules.yaml").write_bytes(b"# Saint-\xc9tienne\nschema_version: 1\nrules: []\n")
    code, _, err = run(capsys, "config", "check", str(path))
    assert code == 2
    reason = "not UTF-8 (byte 0xc9 at line 1, column 9): save the file as UTF-8"
    assert err == f"edgegw: {tmp_path}/rules.yaml: {reason}\n"


def test_every_problem_is_listed_in_one_run_human_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path, url="semtch-udp://127.0.0.1:1700", port="99999", rules=str(tmp_path / "none.yaml")
    )
    code, out, err = run(capsys, "config", "check", str(path))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"edgegw: {path}: mqtt.port: expected a port in 1..65535, got 99999",
        f"edgegw: {path}: radio.url: unknown radio backend 'semtch-udp' (known: semtech-udp, serial, sx127x)",
        f"edgegw: {path}: rules.path: cannot read {tmp_path}/none.yaml: No such file or directory",
    ]

    code, out, _ = run(capsys, "config", "check", str(path), "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False
    assert [(e["file"], e["key_path"]) for e in doc["errors"]] == [
        (str(path), "mqtt.port"),
        (str(path), "radio.url"),
        (str(path), "rules.path"),
    ]


def test_schema_errors_are_all_listed_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        "gateway: {id: 'a b'}\nmqtt: {prot: 1, port: nope, keepalive_s: 1}\noutbox: {max_bytes: 0}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    code, _, err = run(capsys, "config", "check", str(path))
    assert code == 2
    assert [line.split(": ")[2] for line in err.splitlines()] == [
        "mqtt.prot",
        "mqtt.port",
        "gateway.id",
        "mqtt.keepalive_s",
        "outbox.max_bytes",
    ]


def test_an_override_error_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path)
    monkeypatch.setenv("EDGEGW_MQTT__PORT", "99999")
    monkeypatch.setenv("EDGEGW_RADIO__URL", "semtch-udp://127.0.0.1:1700")
    code, _, err = run(capsys, "config", "check", str(path))
    assert code == 2
    assert err.splitlines() == [
        "edgegw: EDGEGW_MQTT__PORT: expected a port in 1..65535, got 99999",
        "edgegw: EDGEGW_RADIO__URL: unknown radio backend 'semtch-udp' (known: semtech-udp, serial, sx127x)",
    ]


LATIN1_CONFIG = b"# Passerelle de Saint-\xc9tienne\ngateway: {id: gw-1}\n"


@pytest.mark.parametrize("argv", [["config", "check", "{path}"], ["run"], ["status"]])
def test_a_latin1_config_is_one_line_and_exit_2_never_a_traceback(tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "edgegw.yaml"
    path.write_bytes(LATIN1_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path), *(a.format(path=path) for a in argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == f"edgegw: {path}: not UTF-8 (byte 0xc9 at line 1, column 23): save the file as UTF-8\n"
    )
