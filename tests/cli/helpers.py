"""Shared helpers for the `edgegw` CLI tests: run argv in-process, build device-add argv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli.main import main

NWK = "2b7e151628aed2a6abf7158809cf4f3c"
APP = "000102030405060708090a0b0c0d0e0f"
EM310 = "milesight/em310-udl"


def clear_edgegw_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EDGEGW_")]:
        monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_with_config(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "--config", str(cfg), *argv)


def abp_argv(eui: str, addr: str, profile: str = EM310, nwk: str | None = NWK, app: str = APP) -> list[str]:
    """`device add` arguments for an ABP device; `nwk=None` leaves out --nwkskey."""
    argv = ["--dev-eui", eui, "--profile", profile, "--abp", "--dev-addr", addr]
    if nwk is not None:
        argv += ["--nwkskey", nwk]
    return [*argv, "--appskey", app]
