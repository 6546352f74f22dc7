"""Files saved in the wrong encoding, or with a repeated key (issue 16, finding 3).

The fault: a rules file hot-reloaded into the running agent after an editor saved it in Latin-1
("Saint-Étienne" in a comment). Before, UnicodeDecodeError escaped the reloader and the agent exited 1,
and again at every start. Now every file the agent or the CLI reads goes through ``gateway.textfile``:
a one-line ConfigError naming the file, the byte, the line and the column; a bad reload keeps the
previous rules; a bad file at start runs without rules. CSV imports say the line of the bad byte.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import textfile
from gateway.codec import ProfileStore
from gateway.errors import ConfigError, NotUtf8, ProvisioningError
from gateway.provisioning import csv_import
from gateway.provisioning.gateway_setup import provision_identity
from gateway.rules.loader import load_rules, parse_rules
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import (
    GATEWAY_EUI,
    AgentProcess,
    cli,
    em310,
    make_device,
    minimal_config,
    register_abp,
    wait_ready,
)

RULES = """# Conteneurs de Saint-Étienne
schema_version: 1
rules:
  - id: container-tilted
    devices: {profiles: [milesight/em310-udl]}
    when: {flag: {field: position, equals: tilt}}
    severity: info
"""
# The same file with one more rule, as an editor that saves Latin-1 writes it: É is the byte 0xc9.
RULES_LATIN1 = (
    RULES
    + """  - id: container-full
    devices: {profiles: [milesight/em310-udl]}
    when: {threshold: {value: {field: distance, fill_empty: 2000, fill_full: 300}, above: 80}}
"""
).encode("latin-1")
BAD_BYTE = "not UTF-8 (byte 0xc9 at line 1, column 23): save the file as UTF-8"


def replace_file(path: Path, data: bytes, bump_s: float) -> None:
    path.write_bytes(data)
    stamp = time.time() + bump_s  # a distinct mtime even with coarse timestamps: the reloader compares them
    os.utime(path, (stamp, stamp))


def rules_status(config_file: Path) -> dict[str, Any]:
    result = cli(config_file, "rules", "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def wait_for(
    agent: AgentProcess, config_file: Path, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        assert agent.proc.poll() is None, "the agent exited:\n" + "\n".join(agent.lines[-15:])
        doc = rules_status(config_file)
        if ok(doc):
            return doc
        assert time.monotonic() < deadline, f"rules status never matched: {json.dumps(doc)}"
        time.sleep(0.2)


def wait_log(agent: AgentProcess, text: str, timeout_s: float = 15.0) -> None:
    """Until the agent logs a line with ``text`` (cheaper than polling the CLI: each call is a process)."""
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in list(agent.lines)):
        assert agent.proc.poll() is None, "the agent exited:\n" + "\n".join(agent.lines[-15:])
        assert time.monotonic() < deadline, f"the agent never logged {text!r}"
        time.sleep(0.05)


def test_a_latin1_rules_file_keeps_the_running_rules_and_a_restart_runs_without_rules(
    tmp_path: Path, mosquitto: Broker, free_udp_port: int
) -> None:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    with config_file.open("a") as f:
        f.write(f"rules: {{path: {rules}, reload_check_s: 0.2}}\n")
    device = make_device(1)
    register_abp(config_file, device)

    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", free_udp_port)) as fwd:
            wait_ready(fwd)
            before = wait_for(agent, config_file, lambda d: d["enabled"] and bool(d["rules"]))
            replace_file(rules, RULES_LATIN1, 1)
            wait_log(agent, "new rules refused")
            refused = rules_status(config_file)
            # The previous rules still fire: a tilted bin opens an episode of container-tilted.
            fwd.send_frames([(device.uplink(em310(90, 1800, True), 85), {})])
            fired = wait_for(agent, config_file, lambda d: bool(d["open_episodes"]))
        alive_after_reload = agent.proc.poll() is None
    finally:
        first_exit = agent.stop()
    first_log = list(agent.lines)

    assert [r["id"] for r in before["rules"]] == ["container-tilted"]
    assert alive_after_reload and first_exit == 0
    assert refused["last_reload"]["ok"] is False
    assert refused["last_reload"]["error"] == f"{rules}: {BAD_BYTE}"
    assert [r["id"] for r in refused["rules"]] == ["container-tilted"]  # the previous rules stay
    assert [e["rule"] for e in fired["open_episodes"]] == ["container-tilted"]
    refusals = [line for line in first_log if "new rules refused" in line]
    assert len(refusals) == 1 and refusals[0].endswith(f"{rules}: {BAD_BYTE}")
    assert not any("Traceback" in line for line in first_log)

    # The bad file is still there at the next start: the agent runs, without rules, and says why.
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", free_udp_port)) as fwd:
            wait_ready(fwd)
            restarted = rules_status(config_file)
    finally:
        second_exit = agent.stop()
    assert second_exit == 0
    assert restarted["enabled"] is True and restarted["rules"] == []
    assert restarted["last_reload"]["error"] == f"{rules}: {BAD_BYTE}"
    assert any("running without rules" in line and BAD_BYTE in line for line in agent.lines)
    assert not any("Traceback" in line for line in agent.lines)


# --- the one reader, under every file kind ----------------------------------------------------------


def test_the_reader_names_file_byte_line_and_column_and_accepts_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"a: 1\n# d\xe9j\xe0 vu\n")
    with pytest.raises(NotUtf8) as info:
        textfile.read_text(path)
    assert str(info.value) == f"{path}: not UTF-8 (byte 0xe9 at line 2, column 4): save the file as UTF-8"
    assert (info.value.line, info.value.column, info.value.byte) == (2, 4, 0xE9)

    path.write_bytes(b"\xef\xbb\xbfa: \xc3\xa9\n")  # UTF-8 with the byte-order mark Windows editors add
    assert textfile.load_yaml(path) == {"a": "é"}

    path.write_bytes("a: 1\n".encode("utf-16"))
    with pytest.raises(NotUtf8, match="not UTF-8 but UTF-16: save the file as UTF-8"):
        textfile.read_text(path)

    with pytest.raises(ConfigError, match="larger than 64 bytes"):
        path.write_bytes(b"#" * 65)
        textfile.read_text(path, max_bytes=64)


def test_a_repeated_key_is_refused_naming_both_lines_and_merge_keys_still_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        textfile.parse_yaml("mqtt:\n  port: 1883\n  host: x\n  port: 8883\n", file="c.yaml")
    assert (
        str(info.value) == "c.yaml: not valid YAML: line 4, column 3: duplicate key 'port' (first on line 2)"
    )
    merged = textfile.parse_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n", file="m.yaml")
    assert merged["d"] == {"x": 3, "y": 2}


def test_rules_and_profiles_in_latin1_are_one_line_config_errors(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(RULES_LATIN1)
    with pytest.raises(ConfigError) as info:
        load_rules(rules)
    assert str(info.value) == f"{rules}: {BAD_BYTE}"

    profile = tmp_path / "profiles" / "acme" / "bin-1.yaml"
    profile.parent.mkdir(parents=True)
    profile.write_bytes(b"schema_version: 1\n# Sa\xefd\nid: acme/bin-1\n")
    with pytest.raises(ConfigError) as info:
        ProfileStore.load_dir(tmp_path / "profiles")
    assert str(info.value) == f"{profile}: not UTF-8 (byte 0xef at line 2, column 5): save the file as UTF-8"
    assert "\n" not in str(info.value)


def test_a_latin1_identity_file_is_a_provisioning_error(tmp_path: Path) -> None:
    (tmp_path / "identity.json").write_bytes(b'{"gateway_id": "gw-\xe9"}\n')
    with pytest.raises(ProvisioningError, match=r"not UTF-8 \(byte 0xe9 at line 1, column 20\)"):
        provision_identity(tmp_path, "gw-1")


# --- CSV imports ----------------------------------------------------------------------------------

CSV_HEADER = "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,site\n"
CSV_LINE = "70b3d57ed0000001,milesight/em310-udl,abp,26011001," + "01" * 16 + "," + "11" * 16 + ",{site}\n"


def test_a_latin1_csv_is_an_import_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_bytes(
        (CSV_HEADER + "# rue de la République\n" + CSV_LINE.format(site="Hôtel")).encode("latin-1")
    )
    with pytest.raises(csv_import.ImportFailed) as info:
        csv_import.read_csv(path)
    (error,) = info.value.errors
    assert error.line == 2
    assert str(error) == "line 2: not UTF-8 (byte 0xe9 at column 14): save the sheet as CSV UTF-8"

    # A spreadsheet's UTF-8 with a byte-order mark reads as it is.
    path.write_bytes(b"\xef\xbb\xbf" + (CSV_HEADER + CSV_LINE.format(site="Hôtel")).encode())
    assert csv_import.read_csv(path).startswith("dev_eui,")


def test_edgegw_device_import_of_a_latin1_csv_exits_2_with_the_line(tmp_path: Path) -> None:
    config_file = minimal_config(tmp_path, 1700, 1883)
    path = tmp_path / "devices.csv"
    path.write_bytes((CSV_HEADER + CSV_LINE.format(site="Hôtel de Ville")).encode("latin-1"))
    result = cli(config_file, "device", "import", str(path), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "errors": [
            {
                "line": 2,
                "column": None,
                "message": "not UTF-8 (byte 0xf4 at column 118): save the sheet as CSV UTF-8",
            }
        ],
    }
    assert "Traceback" not in result.stderr


BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
"""Nine nested aliases: 400 bytes of YAML, 9^9 strings once expanded."""


def test_aliases_that_expand_to_a_billion_nodes_are_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        textfile.parse_yaml(BILLION_LAUGHS + "gateway: {id: gw, name: *i}\n", file="bomb.yaml")
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        parse_rules(BILLION_LAUGHS + "rules: *i\n", file="rules.yaml")
    assert time.monotonic() - started < 5.0
    # Anchors of ordinary size, as the device profiles use them, still work.
    doc = textfile.parse_yaml("base: &b {x: 1}\nuse: {<<: *b, y: 2}\nlist: [*b, *b]\n", file="ok.yaml")
    assert doc["use"] == {"x": 1, "y": 2} and doc["list"] == [{"x": 1}, {"x": 1}]


def test_a_fifo_or_a_directory_given_as_a_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not a regular file"):
        textfile.read_text(fifo)
    with pytest.raises(ConfigError):
        textfile.read_text(tmp_path)
    assert time.monotonic() - started < 1.0
