"""``gateway.cli.main``: the command table, the two-pass parsing, and the helpers every command shares."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from gateway import loglevels
from gateway.cli import common
from gateway.cli.main import COMMANDS, main
from gateway.radio import base as radio_base

CLI_DIR = Path(common.__file__).parent
# `edgegw --help` before the table (issue 17): the same commands in the same order.
COMMANDS_BEFORE = [
    "run", "demo", "config", "device", "decode", "encode", "profile", "status", "devices", "tail", "group",
    "airtime", "lorawan", "qr", "provision", "buffer", "radio", "uplink", "diag", "rules", "fleet",
]  # fmt: skip


def listed_commands(help_text: str) -> list[tuple[str, str]]:
    """(name, help) of each line of the COMMAND section of ``edgegw --help``."""
    section = help_text.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return [(m[1], m[2]) for m in re.finditer(r"^ {4}(\S+) +(.+)$", section, re.MULTILINE)]


def test_help_lists_every_command_with_its_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per command
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = listed_commands(capsys.readouterr().out)
    assert [name for name, _ in listed] == COMMANDS_BEFORE
    assert listed == [(name, command.help) for name, command in COMMANDS.items()]


@pytest.mark.parametrize("name", COMMANDS_BEFORE)
def test_each_command_shows_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith(f"usage: edgegw {name} [-h]")


def test_unknown_and_missing_command_exit_2_listing_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["nosuch"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "invalid choice: 'nosuch' (choose from " + ", ".join(f"'{n}'" for n in COMMANDS_BEFORE) in err
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert (
        exit_.value.code == 2 and "the following arguments are required: COMMAND" in capsys.readouterr().err
    )


def test_no_function_imports_the_cli_itself() -> None:
    """Command modules import the CLI's helpers at the top (the cycle through main is gone)."""
    local = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("gateway.cli"):
                    local.append(f"{path.name}:{inner.lineno} from {inner.module}")
                elif isinstance(inner, ast.Import) and any(
                    a.name.startswith("gateway.cli") for a in inner.names
                ):
                    local.append(f"{path.name}:{inner.lineno} import")
    assert local == []


def test_one_trace_level() -> None:
    assert radio_base.TRACE is loglevels.TRACE == 5
    assert [loglevels.level_number(n) for n in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")] == [
        5,
        10,
        20,
        30,
        40,
    ]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        loglevels.level_number("LOUD")


def test_config_path_option_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGW_CONFIG", "/from/env.yaml")
    assert common.config_path(argparse.Namespace(config="/from/option.yaml")) == "/from/option.yaml"
    assert common.config_path(argparse.Namespace(config=None)) == "/from/env.yaml"
    assert common.config_path(argparse.Namespace()) == "/from/env.yaml"  # a command without --config
    monkeypatch.delenv("EDGEGW_CONFIG")
    assert common.config_path(argparse.Namespace()) == common.DEFAULT_CONFIG == "/etc/edgegw/edgegw.yaml"
