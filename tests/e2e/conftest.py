"""Fixtures of the end-to-end tests: a config with test ports and two registered ABP devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_ID, cli, make_device


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Broker, free_udp_port: int) -> tuple[Path, int, list[AbpDevice]]:
    config_file = tmp_path / "edgegw.yaml"
    # The foundation issue's minimal config, with test ports and a temporary data_dir.
    config_file.write_text(
        f"gateway: {{id: {GATEWAY_ID}}}\n"
        f'radio: {{url: "semtech-udp://127.0.0.1:{free_udp_port}"}}\n'
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: false}}\n"
        f"data_dir: {tmp_path / 'data'}\n"
    )
    devices = [make_device(1), make_device(2)]
    for d in devices:
        result = cli(
            config_file,
            "device",
            "add",
            "--dev-eui",
            d.dev_eui.hex(),
            "--profile",
            d.profile,
            "--abp",
            "--dev-addr",
            d.dev_addr.hex(),
            "--nwkskey",
            d.nwk_s_key.hex(),
            "--appskey",
            d.app_s_key.hex(),
        )
        assert result.returncode == 0, result.stderr
    return config_file, free_udp_port, devices
