"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import clear_edgegw_env


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal config file (no EDGEGW_* overrides) with its data dir under tmp_path."""
    clear_edgegw_env(monkeypatch)
    path = tmp_path / "edgegw.yaml"
    path.write_text(
        "gateway: {id: gw-test-1}\nmqtt: {host: 127.0.0.1, port: 1883, tls: false}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    return path
