"""Fixtures of the end-to-end tests: a config with test ports and two registered ABP devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from tests.conftest import Broker
from tests.e2e.harness import GATEWAY_ID, make_device, register_abp


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
        register_abp(config_file, d)
    return config_file, free_udp_port, devices
